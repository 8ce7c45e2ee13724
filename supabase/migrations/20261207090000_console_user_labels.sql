-- rackpilot: names instead of UUIDs in the operator console.
--
-- Jobs, windows, blocker decisions and the reports name users by id (auth.users), which no
-- signed-in user may read. user_labels answers, for ids the caller already holds, the
-- label the console shows: the display name the user set, else the email. Only users with
-- an application role get answers, and only for the ids they ask about (no listing).

create function public.user_labels(p_ids uuid[])
returns table (id uuid, label text)
language sql
stable
security definer
set search_path = ''
as $$
  select u.id, coalesce(nullif(u.raw_user_meta_data ->> 'display_name', ''), u.email::text, 'user ' || left(u.id::text, 8))
    from auth.users u
   where u.id = any(p_ids[1:500])
     and public.has_role('viewer')
$$;
comment on function public.user_labels(uuid[]) is
  'Display name or email of the given users (at most 500 ids), for callers holding an application role.';

revoke execute on function public.user_labels(uuid[]) from public;
grant execute on function public.user_labels(uuid[]) to authenticated, service_role;
