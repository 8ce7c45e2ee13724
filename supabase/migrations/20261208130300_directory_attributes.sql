-- rackpilot identity: the attribute names a site's directory uses are settings of the site
-- (directory presets: executor/data/directory_presets.yaml; docs/identity.md).
--
-- The direct path read the user's e-mail from mail, the name from displayName, the groups
-- from memberOf and a group's members from member, whatever the directory. They are the
-- usual names in FreeIPA, Active Directory and OpenLDAP, but not everywhere: AD accounts
-- without a mailbox have no mail (their userPrincipalName is the address), and schemas
-- extended by a site name things their own way. Now each is a column with the usual name
-- as its default; the executor path has the same settings (RACKPILOT_IDM_*_ATTRIBUTE).

alter table public.directory_configs
  add column mail_attribute text not null default 'mail',
  add column display_name_attribute text not null default 'displayName',
  add column member_of_attribute text not null default 'memberOf',
  add column member_attribute text not null default 'member',
  add constraint directory_configs_attribute_names check (
    mail_attribute ~ '^([A-Za-z][A-Za-z0-9-]{0,63}|[0-9]+(\.[0-9]+)+)$'
    and display_name_attribute ~ '^([A-Za-z][A-Za-z0-9-]{0,63}|[0-9]+(\.[0-9]+)+)$'
    and member_of_attribute ~ '^([A-Za-z][A-Za-z0-9-]{0,63}|[0-9]+(\.[0-9]+)+)$'
    and member_attribute ~ '^([A-Za-z][A-Za-z0-9-]{0,63}|[0-9]+(\.[0-9]+)+)$');
comment on column public.directory_configs.mail_attribute is 'the user''s e-mail address (AD without mail: userPrincipalName)';
comment on column public.directory_configs.member_of_attribute is 'the user''s groups (nesting = memberof)';
comment on column public.directory_configs.member_attribute is 'a group''s members (uniqueMember is read too)';

grant update (mail_attribute, display_name_attribute, member_of_attribute, member_attribute)
  on public.directory_configs to authenticated;
