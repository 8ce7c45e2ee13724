-- Firmware catalogs as data (issue 18): a registered catalog per site (URL, TLS trust, an
-- optional SHA-256 pin), refreshed by a `catalog_refresh` job whose executor downloads it
-- (Catalog.xml or Catalog.xml.gz, told apart by content), parses it and loads its packages
-- into firmware_packages; baselines are a catalog plus a selection of components; jobs name a
-- catalog (or baseline) by id and create-job fills in the URL and components.
--
-- What a refresh reports (last_status):
--   never   not refreshed yet
--   ok      downloaded from its URL, parsed, within the pin (if any), not stale
--   moved   the URL answered with a redirect: the catalog was loaded from moved_to; update
--           the URL (Dell has moved its catalogs more than once)
--   stale   the catalog's own date (catalog_date) is older than the job's stale_after_days
--   failed  download, parse or pin check failed; last_error says which, in words; the
--           packages of the last good refresh stay
-- signature_status after a refresh:
--   pinned_ok / pinned_mismatch   expected_sha256 set: the download matched the pin or not
--   unverified         no pin and no signing key: the download is trusted as far as its TLS is
--   signed_ok          the catalog carries its publisher's OpenPGP public key (signing_key,
--                      ASCII-armoured; Dell publishes a detached signature beside each
--                      catalog, <catalog URL>.sign): the refresh downloads the .sign and
--                      verifies the catalog with gpgv against that key only
--                      (executor/targets/catalog_signature.py) before anything is loaded, and
--                      the signature is good and made by the signing key
--   signature_bad      the signature does not verify: the catalog or the .sign was altered,
--                      it was made by another key, or the .sign is not a signature; the
--                      refresh fails and the packages of the last good refresh stay
--   signature_missing  the catalog has a signing key but no .sign beside it; the refresh fails
-- A catalog with both a pin and a signing key must pass both; a good one reports signed_ok.
--
-- Result columns are the executor's (executor_record_catalog, fenced by the job's lease);
-- firmware_catalogs_guard keeps a user's write from setting them.

alter table public.firmware_catalogs
  add column tls_verify       boolean not null default true,
  add column ca_pem           text constraint firmware_catalogs_ca_pem_check check (ca_pem is null or (length(ca_pem) <= 65536 and ca_pem like '-----BEGIN CERTIFICATE-----%')),
  add column expected_sha256  text constraint firmware_catalogs_expected_sha256_check check (expected_sha256 is null or expected_sha256 ~ '^[0-9a-f]{64}$'),
  add column sha256           text constraint firmware_catalogs_sha256_check check (sha256 is null or sha256 ~ '^[0-9a-f]{64}$'),
  add column signature_status text not null default 'unchecked'
    constraint firmware_catalogs_signature_status_check check (signature_status in ('unchecked', 'unverified', 'pinned_ok', 'pinned_mismatch',
                                'signed_ok', 'signature_bad', 'signature_missing')),
  add column compressed       boolean,
  add column component_count  integer constraint firmware_catalogs_component_count_check check (component_count >= 0),
  add column catalog_date     timestamptz,
  add column last_status      text not null default 'never' constraint firmware_catalogs_last_status_check check (last_status in ('never', 'ok', 'moved', 'stale', 'failed')),
  add column last_error       text constraint firmware_catalogs_last_error_check check (length(last_error) <= 2000),
  add column moved_to         text constraint firmware_catalogs_moved_to_check check (length(moved_to) <= 2048),
  add column last_job_id      uuid references public.jobs (id) on delete set null,
  add column is_default       boolean not null default false,
  add column signing_key      text constraint firmware_catalogs_signing_key_check check (signing_key is null or (length(signing_key) <= 65536
                                          and btrim(signing_key) like '-----BEGIN PGP PUBLIC KEY BLOCK-----%'));
comment on column public.firmware_catalogs.is_default is
  'the site''s default catalog: a firmware_compliance job that names no catalog uses it (one per site)';
comment on column public.firmware_catalogs.signing_key is
  'ASCII-armoured OpenPGP public key the catalog''s .sign must verify against (null: no signature check)';

create function public.firmware_catalogs_guard()
returns trigger
language plpgsql
as $$
begin
  if public.is_user_context() then
    if tg_op = 'INSERT' then
      new.sha256 := null; new.signature_status := 'unchecked'; new.compressed := null; new.component_count := null;
      new.catalog_date := null; new.last_status := 'never'; new.last_error := null; new.moved_to := null;
      new.last_job_id := null; new.fetched_at := null; new.version := null;
    else
      new.sha256 := old.sha256; new.signature_status := old.signature_status; new.compressed := old.compressed;
      new.component_count := old.component_count; new.catalog_date := old.catalog_date;
      new.last_status := old.last_status; new.last_error := old.last_error; new.moved_to := old.moved_to;
      new.last_job_id := old.last_job_id; new.fetched_at := old.fetched_at; new.version := old.version;
    end if;
  end if;
  return new;
end
$$;
revoke execute on function public.firmware_catalogs_guard() from public, anon;
create trigger firmware_catalogs_guard before insert or update on public.firmware_catalogs
  for each row execute function public.firmware_catalogs_guard();

-- baselines: a catalog plus a selection of components (empty = every applicable update)
create table public.firmware_baselines (
  id          uuid primary key default extensions.gen_random_uuid(),
  site_id     uuid not null references public.sites (id) on delete cascade,
  catalog_id  uuid not null references public.firmware_catalogs (id) on delete cascade,
  name        text not null constraint firmware_baselines_name_check check (name ~ '^[A-Za-z0-9][A-Za-z0-9 ._-]{0,127}$'),
  components  text[] not null default '{}'
    constraint firmware_baselines_components_check check (cardinality(components) <= 64 and array_to_string(components, ',') ~ '^[A-Za-z0-9._,-]*$'),
  description text not null default '' constraint firmware_baselines_description_check check (length(description) <= 2000),
  created_at  timestamptz not null default now(),
  updated_at  timestamptz not null default now(),
  unique (site_id, name)
);
create function public.firmware_baselines_guard()
returns trigger
language plpgsql
as $$
begin
  new.updated_at := now();
  if not exists (select 1 from public.firmware_catalogs c where c.id = new.catalog_id and c.site_id = new.site_id) then
    raise exception using errcode = 'P0001', message = 'catalog_wrong_site: the catalog belongs to another site';
  end if;
  return new;
end
$$;
revoke execute on function public.firmware_baselines_guard() from public, anon;
create trigger firmware_baselines_guard before insert or update on public.firmware_baselines
  for each row execute function public.firmware_baselines_guard();
alter table public.firmware_baselines enable row level security;
revoke all on public.firmware_baselines from anon, authenticated;
grant select, delete on public.firmware_baselines to authenticated;
grant insert (site_id, catalog_id, name, components, description) on public.firmware_baselines to authenticated;
grant update (name, components, description) on public.firmware_baselines to authenticated;
create policy firmware_baselines_select_viewer on public.firmware_baselines for select to authenticated
  using ((select public.has_role('viewer')));
create policy firmware_baselines_insert_operator on public.firmware_baselines for insert to authenticated
  with check ((select public.has_role('operator')));
create policy firmware_baselines_update_operator on public.firmware_baselines for update to authenticated
  using ((select public.has_role('operator'))) with check ((select public.has_role('operator')));
create policy firmware_baselines_delete_operator on public.firmware_baselines for delete to authenticated
  using ((select public.has_role('operator')));
create trigger audit_firmware_baselines_insert after insert on public.firmware_baselines
  referencing new table as new_rows for each statement execute function public.audit_changes();
create trigger audit_firmware_baselines_update after update on public.firmware_baselines
  referencing old table as old_rows new table as new_rows for each statement execute function public.audit_changes();
create trigger audit_firmware_baselines_delete after delete on public.firmware_baselines
  referencing old table as old_rows for each statement execute function public.audit_changes();

-- the executor's record of a refresh (fenced). p_result: {status, error?, sha256?,
-- signature_status?, compressed?, component_count?, catalog_date?, version?, moved_to?};
-- p_packages (only with a loaded catalog): [{component, model, version, path, criticality,
-- reboot_required}], replacing the catalog's packages when p_replace.
create function public.executor_record_catalog(
  p_executor_id uuid,
  p_job_id uuid,
  p_epoch bigint,
  p_result jsonb,
  p_packages jsonb default null,
  p_replace boolean default true
)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job public.jobs%rowtype;
  v_cat public.firmware_catalogs%rowtype;
  v_status text := p_result ->> 'status';
  v_n integer := 0;
begin
  v_job := public.fence_job(p_executor_id, p_job_id, p_epoch);
  if v_job.type <> 'catalog_refresh' then
    raise exception using errcode = '22023', message = 'invalid_argument: not a catalog_refresh job';
  end if;
  select * into v_cat from public.firmware_catalogs
   where id = (v_job.params ->> 'catalog_id')::uuid and site_id = v_job.site_id for update;
  if not found then
    raise exception using errcode = 'P0002', message = 'not_found: the job''s catalog is gone';
  end if;
  if v_status is null or v_status not in ('ok', 'moved', 'stale', 'failed') then
    raise exception using errcode = '22023', message = 'invalid_argument: status must be ok, moved, stale or failed';
  end if;
  if v_status = 'failed' then
    update public.firmware_catalogs
       set last_status = 'failed', last_error = left(p_result ->> 'error', 2000), last_job_id = v_job.id,
           signature_status = coalesce(p_result ->> 'signature_status', signature_status),
           moved_to = coalesce(p_result ->> 'moved_to', moved_to)
     where id = v_cat.id;
    return 0;
  end if;
  if p_packages is not null then
    if jsonb_typeof(p_packages) <> 'array' then
      raise exception using errcode = '22023', message = 'invalid_argument: packages must be a JSON array';
    end if;
    if p_replace then
      delete from public.firmware_packages where catalog_id = v_cat.id;
    end if;
    insert into public.firmware_packages (catalog_id, component, model, version, path, criticality, reboot_required)
    select v_cat.id, left(e ->> 'component', 255), left(coalesce(e ->> 'model', ''), 255), left(e ->> 'version', 255),
           left(e ->> 'path', 2048),
           case lower(coalesce(e ->> 'criticality', '')) when 'urgent' then 'urgent' when 'recommended' then 'recommended'
                else 'optional' end,
           coalesce((e ->> 'reboot_required')::boolean, true)
      from jsonb_array_elements(p_packages) e
     where coalesce(e ->> 'component', '') <> '' and coalesce(e ->> 'version', '') <> '' and coalesce(e ->> 'path', '') <> ''
    on conflict (catalog_id, component, model, version) do nothing;
    get diagnostics v_n = row_count;
  end if;
  update public.firmware_catalogs
     set last_status = v_status, last_error = left(p_result ->> 'error', 2000), last_job_id = v_job.id,
         fetched_at = now(), sha256 = p_result ->> 'sha256',
         signature_status = coalesce(p_result ->> 'signature_status', 'unverified'),
         compressed = (p_result ->> 'compressed')::boolean,
         component_count = (p_result ->> 'component_count')::integer,
         catalog_date = (p_result ->> 'catalog_date')::timestamptz,
         version = left(p_result ->> 'version', 255),
         moved_to = p_result ->> 'moved_to'
   where id = v_cat.id;
  return v_n;
end
$$;
revoke execute on function public.executor_record_catalog(uuid, uuid, bigint, jsonb, jsonb, boolean)
  from public, anon, authenticated;
grant execute on function public.executor_record_catalog(uuid, uuid, bigint, jsonb, jsonb, boolean) to service_role;
comment on function public.executor_record_catalog(uuid, uuid, bigint, jsonb, jsonb, boolean) is
  'catalog_refresh: record what a refresh found and load the catalog''s packages (fenced).';

-- the site's default catalog (the nightly compliance default schedule uses it, 20261206200200_job_schedules.sql)
create unique index firmware_catalogs_one_default_idx on public.firmware_catalogs (site_id) where is_default;

-- marking a catalog as the default unmarks the site's previous one (as the same caller:
-- whoever may update catalogs may move the default)
create function public.firmware_catalogs_one_default()
returns trigger
language plpgsql
as $$
begin
  if new.is_default and (tg_op = 'INSERT' or not old.is_default or new.site_id is distinct from old.site_id) then
    update public.firmware_catalogs set is_default = false
     where site_id = new.site_id and is_default and id <> new.id;
  end if;
  return new;
end
$$;
revoke execute on function public.firmware_catalogs_one_default() from public, anon;
create trigger firmware_catalogs_one_default before insert or update of is_default, site_id on public.firmware_catalogs
  for each row execute function public.firmware_catalogs_one_default();
