"""/storage/v1 is not part of the local stack: the official storage client gets a clear
StorageApiError in Storage's error shape (not a KeyError while parsing the answer)."""

from __future__ import annotations

import pytest
from storage3.exceptions import StorageApiError

from supabase import create_client


def test_storage_client_gets_a_clear_not_served(api_url, service_key):
    sb = create_client(api_url, service_key)
    with pytest.raises(StorageApiError) as err:
        sb.storage.list_buckets()
    assert str(err.value.status) == "501" and err.value.code == "not_implemented"
    assert "not served" in err.value.message
