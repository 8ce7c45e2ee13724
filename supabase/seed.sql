-- rackpilot demo seed: one site. Users and their roles come from
-- `rackpilot dev user add EMAIL --role ROLE`; inventory arrives through sync jobs.
insert into public.sites (id, name, description, timezone)
values ('00000000-0000-4000-8000-000000000001', 'demo', 'Demo site on the simulated lab', 'UTC')
on conflict (id) do nothing;
