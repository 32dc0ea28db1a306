--
-- operations: retention through zim_pin_run_jobs, in bounded batches;
-- replaying what failed with zim_pin_retry_failed; the zim_pin_failure
-- view (no worker runs here)
--
SELECT double('Reset')->'Code' AS reset;
DELETE FROM zim_pin_job;

-- retention: zim_pin_run_jobs deletes finished jobs older than
-- zim_pin.job_retention (7 days), oldest first, at most 1,000 a call,
-- with their failure rows, and never a pending job
INSERT INTO zim_pin_job (from_user_id, conv_ids, conv_types, pinned, state, finished_at)
SELECT 'old' || (i % 10), ARRAY['g'], ARRAY[2], true, CASE WHEN i % 2 = 0 THEN 'done' ELSE 'failed' END,
       now() - interval '8 days' - i * interval '1 second'
FROM generate_series(1, 2500) i;
INSERT INTO zim_pin_job_failure (job_id, conv_id, conv_type, sub_code)
SELECT job_id, 'g', 2, 660500002 FROM zim_pin_job WHERE state = 'failed';
INSERT INTO zim_pin_job (from_user_id, conv_ids, conv_types, pinned, state, finished_at)
VALUES ('recent', ARRAY['g'], ARRAY[2], true, 'done', now() - interval '6 days'),
       ('old_pending', ARRAY['g'], ARRAY[2], true, 'pending', NULL);
UPDATE zim_pin_job SET enqueued_at = now() - interval '30 days', next_attempt_at = now() + interval '1 hour'
WHERE from_user_id = 'old_pending';
SELECT count(*) AS jobs, count(*) FILTER (WHERE finished_at < now() - interval '7 days') AS old_jobs,
       (SELECT count(*) FROM zim_pin_job_failure) AS failure_rows
FROM zim_pin_job;
-- the deletion can go through the index on finished_at (whether it does
-- depends on the table's size: 016_operations shows it on 200,000 rows)
SET enable_seqscan = off;
EXPLAIN (COSTS OFF)
SELECT o.job_id FROM zim_pin_job o
WHERE o.state <> 'pending' AND o.finished_at < clock_timestamp() - make_interval(mins => 10080)
ORDER BY o.finished_at LIMIT 1000;
RESET enable_seqscan;
SELECT zim_pin_run_jobs(0) AS finished;
SELECT count(*) AS jobs, min(finished_at) < now() - interval '8 days' - interval '1499 seconds' AS oldest_deleted_first,
       (SELECT count(*) FROM zim_pin_job_failure) AS failure_rows
FROM zim_pin_job;
SELECT zim_pin_run_jobs(0) AS finished;
SELECT zim_pin_run_jobs(0) AS finished;
SELECT from_user_id, state FROM zim_pin_job ORDER BY job_id;
SELECT count(*) AS failure_rows FROM zim_pin_job_failure;
DELETE FROM zim_pin_job;

-- replay after the cause is fixed: an unregistered user, then registered
SELECT zim_conv_pinned_enqueue('late_user', ARRAY['a1', 'a2'], 2, true) > 0 AS enqueued;
SELECT zim_pin_run_jobs() AS finished;
SELECT from_user_id, state, last_code FROM zim_pin_job ORDER BY job_id;
SELECT from_user_id, conv_id, conv_type, pinned, job_state, sub_code, retried_by
FROM zim_pin_failure ORDER BY job_id, conv_id;
SELECT register('late_user');
SELECT count(*) AS queued FROM zim_pin_retry_failed();
SELECT zim_pin_run_jobs() AS finished;
SELECT from_user_id, conv_ids, state, retried_at IS NOT NULL AS retried,
       retried_by = (SELECT max(job_id) FROM zim_pin_job) AS retried_by_the_new_job
FROM zim_pin_job ORDER BY job_id;
SELECT * FROM double_pins('late_user') ORDER BY 1;
-- run twice: nothing more
SELECT count(*) AS queued FROM zim_pin_retry_failed();

-- replay after the secret is corrected
SELECT double('Config', '{"SecretRotated": true}')->'Code' AS rotated;
SELECT zim_conv_pinned_enqueue('late_user', ARRAY['s1'], 2, true) > 0 AS enqueued;
SELECT zim_pin_run_jobs() AS finished;
SELECT double('Config', '{"SecretRotated": false}')->'Code' AS restored;
SELECT state, last_code, attempts FROM zim_pin_job ORDER BY job_id DESC LIMIT 1;
SELECT count(*) AS queued FROM zim_pin_retry_failed(now() - interval '1 minute', 'late_user');
SELECT zim_pin_run_jobs() AS finished;
SELECT conv_ids, state FROM zim_pin_job ORDER BY job_id DESC LIMIT 1;
SELECT * FROM double_pins('late_user') ORDER BY 1;

-- a conversation that a later job already decided is not replayed: the
-- failed pin of b1 and b2 is followed by an unpin of b1, so only b2 goes
SELECT zim_conv_pinned_enqueue('later_user', ARRAY['b1', 'b2'], 2, true) > 0 AS enqueued;
SELECT zim_pin_run_jobs() AS finished;
SELECT register('later_user');
SELECT zim_conv_pinned_enqueue('later_user', ARRAY['b1'], 2, false) > 0 AS enqueued;
SELECT zim_pin_run_jobs() AS finished;
SELECT count(*) AS queued FROM zim_pin_retry_failed(from_user_id => 'later_user');
SELECT zim_pin_run_jobs() AS finished;
SELECT conv_ids, pinned, state, retried_by IS NOT NULL AS retried
FROM zim_pin_job WHERE from_user_id = 'later_user' ORDER BY job_id;
SELECT * FROM double_pins('later_user') ORDER BY 1;
-- and a job whose every failed conversation was decided later is marked
-- retried with no new job
SELECT zim_conv_pinned_enqueue('gone_user', ARRAY['c1'], 2, true) > 0 AS enqueued;
SELECT zim_pin_run_jobs() AS finished;
SELECT register('gone_user');
SELECT zim_conv_pinned_enqueue('gone_user', ARRAY['c1'], 2, false) > 0 AS enqueued;
SELECT zim_pin_run_jobs() AS finished;
SELECT count(*) AS queued FROM zim_pin_retry_failed(from_user_id => 'gone_user');
SELECT pinned, state, retried_at IS NOT NULL AS retried, retried_by
FROM zim_pin_job WHERE from_user_id = 'gone_user' ORDER BY job_id;

-- the window: jobs that finished before it are left alone
UPDATE zim_pin_job SET finished_at = now() - interval '2 days', retried_at = NULL, retried_by = NULL
WHERE from_user_id = 'gone_user';
SELECT count(*) AS queued FROM zim_pin_retry_failed();
SELECT * FROM zim_try($$SELECT zim_pin_retry_failed(NULL)$$);

-- privileges: replaying and reading failures are not for PUBLIC
SELECT has_function_privilege('public', 'zim_pin_retry_failed(timestamptz, text)', 'EXECUTE') AS public_can_retry,
       has_table_privilege('public', 'zim_pin_failure', 'SELECT') AS public_can_read_failures;
CREATE ROLE zim_ops_ro NOLOGIN;
SET ROLE zim_ops_ro;
SELECT * FROM zim_try($$SELECT zim_pin_retry_failed()$$);
SELECT * FROM zim_try($$SELECT * FROM zim_pin_failure$$);
RESET ROLE;
DROP ROLE zim_ops_ro;
DELETE FROM zim_pin_job;
