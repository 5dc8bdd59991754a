-- Requests per minute a plan's clinics may make through the API (`/v1`): per clinic, and per
-- API key (NULL: no limit). Beyond them, requests are answered 429 with Retry-After.
ALTER TABLE plans ADD COLUMN requests_per_minute integer CHECK (requests_per_minute > 0);
ALTER TABLE plans ADD COLUMN key_requests_per_minute integer CHECK (key_requests_per_minute > 0);
UPDATE plans SET requests_per_minute = 600, key_requests_per_minute = 300 WHERE id = 'starter';
UPDATE plans SET requests_per_minute = 3000, key_requests_per_minute = 1500
 WHERE id = 'professional';
