--
-- merge: a user's consecutive jobs go out as the fewest requests with the
-- same final state; each job keeps its own outcome and failure rows
-- (no worker runs here)
--
SELECT double('Reset')->'Code' AS reset;
DELETE FROM zim_pin_job;
SELECT register('m1', 'm2', 'm3', 'm4', 'm5', 'm6');

-- one user's 100 one-conversation pins: 5 requests of 20
SELECT count(zim_conv_pinned_enqueue('m1', ARRAY['g' || i], 2, true)) AS enqueued
FROM generate_series(1, 100) i;
SELECT double_requests() AS requests_before;
SELECT zim_pin_run_jobs() AS finished;
SELECT double_requests() AS requests_after;
SELECT state, attempts, last_code, last_message, count(*)
FROM zim_pin_job GROUP BY 1, 2, 3, 4;
SELECT count(*) AS pins FROM double_pins('m1');
DELETE FROM zim_pin_job;

-- the last job wins per conversation; the others leave it to that job and
-- send nothing for it
SELECT double('Reset')->'Code' AS reset;
SELECT register('m1', 'm2', 'm3', 'm4', 'm5', 'm6');
SELECT zim_conv_pinned_enqueue('m2', ARRAY['x'], 2, (i % 2 = 1)) > 0 AS enqueued
FROM generate_series(1, 6) i;
SELECT double_requests() AS requests_before;
SELECT zim_pin_run_jobs() AS finished;
SELECT double_requests() AS requests_after;
SELECT pinned, state, attempts, last_code,
       regexp_replace(last_message, 'job [0-9]+', 'job N') AS last_message
FROM zim_pin_job ORDER BY job_id;
SELECT count(*) AS pins FROM double_pins('m2');
DELETE FROM zim_pin_job;

-- unpins go before pins: at the 100-pin limit, an unpin queued before a
-- pin frees the slot the pin needs
SELECT zim_conv_pinned('m3', ARRAY(SELECT 'full' || i FROM generate_series(1, 100) i), 2, true);
SELECT zim_conv_pinned_enqueue('m3', ARRAY['full1'], 2, false) > 0 AS enqueued;
SELECT zim_conv_pinned_enqueue('m3', ARRAY['new1'], 2, true) > 0 AS enqueued;
SELECT zim_pin_run_jobs() AS finished;
SELECT pinned, state, last_code FROM zim_pin_job ORDER BY job_id;
SELECT count(*) AS failure_rows FROM zim_pin_job_failure;
SELECT count(*) AS pins, bool_or(p = 'new1/2') AS has_new1, bool_or(p = 'full1/2') AS has_full1
FROM double_pins('m3') p;
DELETE FROM zim_pin_job;

-- failure rows are per job: two jobs share one request, and the
-- conversation that hit the limit is the second job's alone
SELECT zim_conv_pinned('m4', ARRAY(SELECT 'h' || i FROM generate_series(1, 99) i), 2, true);
SELECT zim_conv_pinned_enqueue('m4', ARRAY['a1'], 2, true) > 0 AS enqueued;
SELECT zim_conv_pinned_enqueue('m4', ARRAY['b1'], 2, true) > 0 AS enqueued;
SELECT double_requests() AS requests_before;
SELECT zim_pin_run_jobs() AS finished;
SELECT double_requests() AS requests_after;
SELECT conv_ids, state, last_code FROM zim_pin_job ORDER BY job_id;
SELECT j.conv_ids, f.conv_id, f.sub_code FROM zim_pin_job_failure f JOIN zim_pin_job j USING (job_id);
DELETE FROM zim_pin_job;

-- a request that fails whole, transiently: each job that had a part in it
-- is retried, with its attempt counted
SELECT double('Fault', '{"Fault": "code", "Code": 660000001, "Match": "\"m5\""}')->'Code' AS fault;
SELECT zim_conv_pinned_enqueue('m5', ARRAY['c1'], 2, true) > 0 AS enqueued;
SELECT zim_conv_pinned_enqueue('m5', ARRAY['c2'], 2, true) > 0 AS enqueued;
SELECT zim_pin_run_jobs() AS finished;
SELECT conv_ids, state, attempts, last_code, next_attempt_at > now() AS backing_off
FROM zim_pin_job ORDER BY job_id;
UPDATE zim_pin_job SET next_attempt_at = now();
SELECT zim_pin_run_jobs() AS finished;
SELECT conv_ids, state, attempts, last_code FROM zim_pin_job ORDER BY job_id;
DELETE FROM zim_pin_job;

-- a retry of part of a group keeps the user's order: the first job's unpin
-- fails transiently; the second job's pin, which depends on nothing but
-- comes later, is held back unsent, its attempt not counted
SELECT zim_conv_pinned('m6', ARRAY['keep'], 2, true);
SELECT double_requests() AS requests_before;
SELECT double('Fault', '{"Fault": "http503", "Match": "\"PinnedType\":0"}')->'Code' AS fault;
SELECT zim_conv_pinned_enqueue('m6', ARRAY['keep'], 2, false) > 0 AS enqueued;
SELECT zim_conv_pinned_enqueue('m6', ARRAY['later'], 2, true) > 0 AS enqueued;
SELECT zim_pin_run_jobs() AS finished;
SELECT double_requests() AS requests_after;
SELECT conv_ids, pinned, state, attempts, claimed_by IS NULL AS unclaimed FROM zim_pin_job ORDER BY job_id;
SELECT zim_pin_run_jobs() AS finished_while_the_first_backs_off;
UPDATE zim_pin_job SET next_attempt_at = now() WHERE NOT pinned;
SELECT zim_pin_run_jobs() AS finished;
SELECT conv_ids, pinned, state, attempts FROM zim_pin_job ORDER BY job_id;
SELECT * FROM double_pins('m6') ORDER BY 1;
DELETE FROM zim_pin_job;

-- many failure rows in one record (an unregistered user, 45 conversations
-- over three jobs): every one is its job's
SELECT zim_conv_pinned_enqueue('nobody_m', ARRAY(SELECT 'z' || (k * 15 + i) FROM generate_series(1, 15) i), 2, true) > 0 AS enqueued
FROM generate_series(0, 2) k;
SELECT zim_pin_run_jobs() AS finished;
SELECT state, last_code, attempts, count(*) FROM zim_pin_job GROUP BY 1, 2, 3;
SELECT count(*) AS failure_rows, count(DISTINCT job_id) AS jobs, count(DISTINCT conv_id) AS conversations,
       min(sub_code) AS sub_code
FROM zim_pin_job_failure;
DELETE FROM zim_pin_job;
