# Retention on every path, in bounded batches (issue 11): 200,000 finished
# jobs past zim_pin.job_retention do not make a zim_pin_run_jobs call (a
# pg_cron run) slow: each call deletes at most 1,000, oldest first, through
# the index on finished_at, and later calls finish the job; the worker
# deletes them all, a batch per transaction, without waiting a minute
# between batches.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use ZimTest;

my $node = zim_node('operations');
$node->safe_psql('postgres', q{SELECT double('Reset')});
my $old_rows = q{
	INSERT INTO zim_pin_job (from_user_id, conv_ids, conv_types, pinned, state, finished_at)
	SELECT 'old' || (i % 1000), ARRAY['g1', 'g2'], ARRAY[2, 2], true,
	       CASE WHEN i % 4 = 0 THEN 'failed' ELSE 'done' END,
	       now() - interval '30 days' + i * interval '1 second'
	FROM generate_series(1, 200000) i;
	INSERT INTO zim_pin_job_failure (job_id, conv_id, conv_type, sub_code)
	SELECT job_id, c, 2, 660500002 FROM zim_pin_job, unnest(conv_ids) c WHERE state = 'failed';
	ANALYZE zim_pin_job; ANALYZE zim_pin_job_failure;
};
$node->safe_psql('postgres', $old_rows);
is($node->safe_psql('postgres', q{SELECT count(*) FROM zim_pin_job}), '200000', '200,000 old finished jobs');

like($node->safe_psql('postgres', q{EXPLAIN (COSTS OFF) SELECT o.job_id FROM zim_pin_job o
	WHERE o.state <> 'pending' AND o.finished_at < clock_timestamp() - make_interval(mins => 10080)
	ORDER BY o.finished_at LIMIT 1000 FOR UPDATE OF o SKIP LOCKED}),
	qr/Index Scan using zim_pin_job_finished/, 'the batch of old jobs is found through the index on finished_at');

my $third_thousand = $node->safe_psql('postgres', q{SELECT finished_at FROM zim_pin_job ORDER BY finished_at OFFSET 3000 LIMIT 1});
my @took;
for (1 .. 3)
{
	my $t0 = time;
	$node->safe_psql('postgres', q{SELECT zim_pin_run_jobs()});
	push @took, time - $t0;
}
is($node->safe_psql('postgres', q{SELECT count(*) FROM zim_pin_job}), '197000', 'three zim_pin_run_jobs calls deleted 1,000 jobs each');
cmp_ok((sort { $b <=> $a } @took)[0], '<', 2, sprintf('... each call within 2 s (%s)', join(', ', map { sprintf('%.3f s', $_) } @took)));
is($node->safe_psql('postgres', q{SELECT min(finished_at) FROM zim_pin_job}), $third_thousand,
	'... the oldest first');
is($node->safe_psql('postgres', q{SELECT count(*) FROM zim_pin_job_failure f WHERE NOT EXISTS (SELECT 1 FROM zim_pin_job j WHERE j.job_id = f.job_id)}),
	'0', '... with their failure rows');

# the worker: the same backlog goes in batches, one after the other
$node->append_conf('postgresql.conf', "zim_pin.worker_database = 'postgres'\n");
$node->restart;
my $t0 = time;
ok($node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM zim_pin_job}),
	'the worker deletes the rest');
my $took = time - $t0;
cmp_ok($took, '<', 60, sprintf('... in %.1f s, a batch of 1,000 after the other', $took));
is($node->safe_psql('postgres', q{SELECT count(*) FROM zim_pin_job_failure}), '0', '... with their failure rows');
$node->stop;
done_testing();
