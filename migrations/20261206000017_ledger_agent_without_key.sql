-- The ledger's `agent_id` keeps the agent a call was made through, without a foreign key: the
-- key's check ran for every row inserted (an after-row trigger, even when the call had no
-- agent), about a tenth of a ledger row's cost to Postgres, and the writer looked each row's
-- agent up besides, so that a batch with an agent deleted since its calls was not refused by
-- the key (bench/ledger-agent-key.sh, bench/README.md). The ledger is a record of what was
-- spent: a deleted agent's calls keep its id, and reports, which join agents as they are, show
-- them under no agent, as they did when the key set the id to none. Agent ids come only from
-- the clinic's own agents (the gateway reads them under the clinic's row-level security).
ALTER TABLE usage_events DROP CONSTRAINT usage_events_agent_id_fkey;
