-- rackpilot control plane: the identity sequence of firmware_compliance_history
-- (20261208200000) is not the API roles' to use.
--
-- The platform's default privileges grant USAGE and UPDATE on every new sequence in public
-- to anon and authenticated; the access migrations revoke them from the sequences that
-- existed then (20261128010600, 20261207100000), and a later table's migration has to do
-- the same. Nothing writes the history but its SQL trigger, so no API role needs it
-- (tests/integration/test_hostile_review.py checks every sequence of public).
revoke all on sequence public.firmware_compliance_history_id_seq from anon, authenticated;
