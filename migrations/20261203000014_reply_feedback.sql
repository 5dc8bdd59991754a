-- Feedback on a reply: thumbs up (1) or down (-1), with an optional comment, given by the
-- person whose conversation it is. Admins read it per agent, without the conversation.
ALTER TABLE messages
    ADD COLUMN rating smallint CHECK (rating IN (-1, 1)),
    ADD COLUMN rating_comment text NOT NULL DEFAULT '' CHECK (char_length(rating_comment) <= 2000),
    ADD COLUMN rated_at timestamptz;

CREATE INDEX messages_rated_idx ON messages (tenant_id, rated_at DESC) WHERE rating IS NOT NULL;
