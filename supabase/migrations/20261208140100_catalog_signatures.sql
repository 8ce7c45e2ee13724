-- Dell catalog signatures (issue 18): a registered catalog may carry the OpenPGP public key
-- its publisher signs it with (signing_key, ASCII-armoured; Dell publishes a detached
-- signature beside each catalog, <catalog URL>.sign). A catalog_refresh of such a catalog
-- downloads the .sign file and verifies the catalog with gpgv against that key only
-- (executor/targets/catalog_signature.py), before anything is loaded.
--
-- signature_status after a refresh (with the statuses of 20261207120100):
--   signed_ok          the signature is good and made by the signing key
--   signature_bad      the signature does not verify: the catalog or the .sign was altered,
--                      it was made by another key, or the .sign is not a signature; the
--                      refresh fails and the packages of the last good refresh stay
--   signature_missing  the catalog has a signing key but no .sign beside it; the refresh fails
--   pinned_ok / pinned_mismatch / unverified   as before (no signing key: the SHA-256 pin, or
--                      the download trusted as far as its TLS is)
-- A catalog with both a pin and a signing key must pass both; a good one reports signed_ok.

alter table public.firmware_catalogs
  add column signing_key text check (signing_key is null or (length(signing_key) <= 65536
                                     and btrim(signing_key) like '-----BEGIN PGP PUBLIC KEY BLOCK-----%'));
comment on column public.firmware_catalogs.signing_key is
  'ASCII-armoured OpenPGP public key the catalog''s .sign must verify against (null: no signature check)';

alter table public.firmware_catalogs drop constraint firmware_catalogs_signature_status_check;
alter table public.firmware_catalogs add constraint firmware_catalogs_signature_status_check
  check (signature_status in ('unchecked', 'unverified', 'pinned_ok', 'pinned_mismatch',
                              'signed_ok', 'signature_bad', 'signature_missing'));
