-- rackpilot identity, part 1: enum values the identity migration uses (a value added by
-- ALTER TYPE cannot be used in the transaction that adds it, so they come first).
--
-- credential_kind 'ldap': the directory bind account the executor's identity agent reads
--   group membership with (sealed to the executor's key like every other credential).
-- notification_event 'breakglass_used': sent on every enabled notification channel,
--   whatever events that channel subscribed to.

alter type public.credential_kind add value if not exists 'ldap';
alter type public.notification_event add value if not exists 'breakglass_used';
