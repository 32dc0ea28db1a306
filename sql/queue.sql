--
-- queue: zim_conv_pinned_enqueue and zim_pin_run_jobs (no worker runs here)
--
SELECT double('Reset')->'Code' AS reset;
SELECT register('j1', 'j2', 'j3');

-- the input is checked like zim_conv_pinned's, in the caller's transaction
SELECT * FROM zim_try($$SELECT zim_conv_pinned_enqueue(NULL, ARRAY['a'], 0, true)$$);
SELECT * FROM zim_try($$SELECT zim_conv_pinned_enqueue('j1', ARRAY['a', NULL], 0, true)$$);
SELECT * FROM zim_try($$SELECT zim_conv_pinned_enqueue('a/b', ARRAY['a'], 0, true)$$);
SELECT * FROM zim_try($$SELECT zim_conv_pinned_enqueue('j1', ARRAY[''], 0, true)$$);
SELECT * FROM zim_try($$SELECT zim_conv_pinned_enqueue('j1', ARRAY['a'], 1, true)$$);
SELECT * FROM zim_try($$SELECT zim_conv_pinned_enqueue('j1', ARRAY['a', 'b'], ARRAY[0], true)$$);
SELECT count(*) AS jobs FROM zim_pin_job;

-- a rolled-back job never exists
BEGIN;
SELECT zim_conv_pinned_enqueue('j1', ARRAY['j2'], 0, true) > 0 AS enqueued;
ROLLBACK;
SELECT count(*) AS jobs FROM zim_pin_job;

-- committed jobs wait for a runner; nothing is sent before
SELECT zim_conv_pinned_enqueue('j1', ARRAY['j2', 'ghost'], 0, true) > 0 AS enqueued;
SELECT zim_conv_pinned_enqueue('j1', ARRAY['grp'], 2, true) > 0 AS enqueued;
SELECT zim_conv_pinned_enqueue('j1', ARRAY['grp'], 2, false) > 0 AS enqueued;
SELECT zim_conv_pinned_enqueue('nobody', ARRAY['g1', 'g2'], ARRAY[2, 2], true) > 0 AS enqueued;
SELECT zim_conv_pinned_enqueue('j3', ARRAY[]::text[], 2, true) > 0 AS enqueued;
SELECT pending, pending_requests, expected_drain_time > '0'::interval AS has_drain_time
FROM zim_pin_backlog;
SELECT double_requests() AS requests;

-- zim_pin_run_jobs sends them in the calling transaction, in order per user
SELECT * FROM zim_try('SELECT zim_pin_run_jobs(-1)');
SELECT zim_pin_run_jobs(0) AS finished;
SELECT zim_pin_run_jobs() AS finished;
SELECT zim_pin_run_jobs() AS finished;
SELECT from_user_id, conv_ids, state, attempts, last_code, last_message,
       finished_at IS NOT NULL AS has_finished_at, claimed_by IS NULL AS unclaimed
FROM zim_pin_job ORDER BY job_id;
SELECT j.from_user_id, f.conv_id, f.conv_type, f.sub_code, f.sub_message
FROM zim_pin_job_failure f JOIN zim_pin_job j USING (job_id)
ORDER BY f.job_id, f.conv_id;
SELECT * FROM double_pins('j1');
SELECT pending FROM zim_pin_backlog;

-- a transient failure leaves the job pending with a later attempt time
SELECT double('Fault', '{"Fault": "http503", "Count": 1, "Action": "ConvPinned"}')->'Code' AS fault;
SELECT zim_conv_pinned_enqueue('j2', ARRAY['later'], 2, true) > 0 AS enqueued;
SELECT zim_pin_run_jobs() AS finished;
SELECT state, attempts, last_code, last_message, next_attempt_at > clock_timestamp() AS later
FROM zim_pin_job WHERE from_user_id = 'j2';
UPDATE zim_pin_job SET next_attempt_at = clock_timestamp() WHERE from_user_id = 'j2';
SELECT zim_pin_run_jobs() AS finished;
SELECT state, attempts, last_code FROM zim_pin_job WHERE from_user_id = 'j2';

-- privileges: an application role gets the enqueue functions and reads results
CREATE ROLE zim_queue_app NOLOGIN;
SET ROLE zim_queue_app;
SELECT * FROM zim_try($$SELECT zim_conv_pinned_enqueue('j1', ARRAY['x'], 2, true)$$);
SELECT * FROM zim_try($$SELECT count(*) FROM zim_pin_job$$);
SELECT * FROM zim_try($$SELECT zim_pin_run_jobs()$$);
RESET ROLE;
GRANT EXECUTE ON FUNCTION zim_conv_pinned_enqueue(text, text[], integer, boolean) TO zim_queue_app;
GRANT SELECT ON zim_pin_job, zim_pin_job_failure TO zim_queue_app;
SET ROLE zim_queue_app;
SELECT zim_conv_pinned_enqueue('j1', ARRAY['x'], 2, true) > 0 AS enqueued;
SELECT count(*) AS pending FROM zim_pin_job WHERE state = 'pending';
SELECT * FROM zim_try($$INSERT INTO zim_pin_job (from_user_id, conv_ids, conv_types, pinned) VALUES ('j1', '{x}', '{2}', true)$$);
RESET ROLE;
SELECT zim_pin_run_jobs() AS finished;
REVOKE ALL ON zim_pin_job, zim_pin_job_failure FROM zim_queue_app;
REVOKE ALL ON FUNCTION zim_conv_pinned_enqueue(text, text[], integer, boolean) FROM zim_queue_app;
DROP ROLE zim_queue_app;

-- zim_pin_run_jobs never sends its own transaction's jobs: they are not
-- committed and may never be (enqueued, in a savepoint, or inserted by hand);
-- a later job of the same user waits behind them
SELECT double('Reset')->'Code' AS reset;
SELECT register('j5') AS registered;
BEGIN;
SELECT zim_conv_pinned_enqueue('j5', ARRAY['own1'], 2, true) > 0 AS enqueued;
SAVEPOINT s;
SELECT zim_conv_pinned_enqueue('j5', ARRAY['own2'], 2, true) > 0 AS enqueued;
RELEASE SAVEPOINT s;
INSERT INTO zim_pin_job (from_user_id, conv_ids, conv_types, pinned) VALUES ('j6', '{own3}', '{2}', true);
SELECT zim_pin_run_jobs() AS finished;
SELECT count(*) AS convpinned_sent FROM jsonb_array_elements(double('State')->'Requests') r WHERE r->>'Action' = 'ConvPinned';
ROLLBACK;
SELECT count(*) AS jobs_left FROM zim_pin_job WHERE from_user_id IN ('j5', 'j6');
SELECT count(*) AS convpinned_sent FROM jsonb_array_elements(double('State')->'Requests') r WHERE r->>'Action' = 'ConvPinned';
-- once committed, they are sent
BEGIN;
SELECT zim_conv_pinned_enqueue('j5', ARRAY['own1'], 2, true) > 0 AS enqueued;
COMMIT;
SELECT zim_pin_run_jobs() AS finished;
SELECT state FROM zim_pin_job WHERE from_user_id = 'j5';
