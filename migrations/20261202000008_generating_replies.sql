-- A reply that a request is generating has its own status, `generating`, so a page opened
-- meanwhile (a reload, another tab) waits for it instead of asking for it again.
--
-- Databases migrated with an edited copy of migration 5 already allow the status; dropping
-- and adding the constraint by name gives every database the same one.
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_status_check;
ALTER TABLE messages ADD CONSTRAINT messages_status_check
    CHECK (status IN ('pending', 'generating', 'complete', 'stopped', 'failed'));

-- Replies claimed before this migration were marked `pending` with `error = 'generating'`.
-- Row-level security is forced on the table even for its owner; lift it for this one update.
ALTER TABLE messages NO FORCE ROW LEVEL SECURITY;
UPDATE messages SET status = 'generating', error = NULL
 WHERE status = 'pending' AND error = 'generating';
ALTER TABLE messages FORCE ROW LEVEL SECURITY;
