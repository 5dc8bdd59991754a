-- Which agent a call was made through (chat, or the API's `agent:<slug>`), for the usage
-- dashboard. NULL for direct model calls and for agents since deleted.
ALTER TABLE usage_events ADD COLUMN agent_id uuid REFERENCES agents (id) ON DELETE SET NULL;
