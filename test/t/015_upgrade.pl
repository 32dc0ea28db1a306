# Upgrading from 1.0 (issues 9 and 11): ALTER EXTENSION zim_pin UPDATE keeps
# every job, pending and finished, and the pending ones are then sent; a
# fresh install of the default version and an upgraded one have the same
# objects, compared through pg_dump --binary-upgrade (which dumps every
# member of an extension, with its definition, privileges and comments).
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use Test::More;
use ZimTest;

my $node = zim_node('upgrade');
$node->safe_psql('postgres', q{SELECT double('Reset'); SELECT register('u1', 'u2')});
my $default = $node->safe_psql('postgres', q{SELECT default_version FROM pg_available_extensions WHERE name = 'zim_pin'});

# --- 1.0 with finished and pending jobs ----------------------------------------
$node->safe_psql('postgres', q{CREATE DATABASE upg; CREATE DATABASE fresh});
$node->safe_psql('upg', q{CREATE EXTENSION zim_pin VERSION '1.0'});
$node->safe_psql('upg', q{
	SELECT zim_conv_pinned_enqueue('u1', ARRAY['g1', 'g2'], 2, true);
	SELECT zim_conv_pinned_enqueue('nobody', ARRAY['g1'], 2, true);
});
is($node->safe_psql('upg', q{SELECT zim_pin_run_jobs()}), '2', '1.0: two jobs finished');
$node->safe_psql('upg', q{
	SELECT zim_conv_pinned_enqueue('u2', ARRAY['g3'], 2, true);
	SELECT zim_conv_pinned_enqueue('u1', ARRAY['g1'], 2, false);
});
my $jobs_sql = q{SELECT string_agg(job_id || ' ' || from_user_id || ' ' || array_to_string(conv_ids, ',') || ' ' || state, '; ' ORDER BY job_id) FROM zim_pin_job};
my $before = $node->safe_psql('upg', $jobs_sql);
is($before, '1 u1 g1,g2 done; 2 nobody g1 failed; 3 u2 g3 pending; 4 u1 g1 pending',
	'1.0: a done, a failed and two pending jobs');
my $failures_before = $node->safe_psql('upg', q{SELECT count(*) FROM zim_pin_job_failure});

# --- the upgrade -----------------------------------------------------------------
$node->safe_psql('upg', q{ALTER EXTENSION zim_pin UPDATE});
is($node->safe_psql('upg', q{SELECT extversion FROM pg_extension WHERE extname = 'zim_pin'}), $default,
	"ALTER EXTENSION zim_pin UPDATE reaches the default version, $default");
is($node->safe_psql('upg', $jobs_sql), $before, 'every job is kept');
is($node->safe_psql('upg', q{SELECT count(*) FROM zim_pin_job_failure}), $failures_before, '... with its failure rows');
is($node->safe_psql('upg', q{SELECT zim_pin_run_jobs()}), '2', 'the pending jobs are sent after the upgrade');
is($node->safe_psql('upg', q{SELECT string_agg(state, ',' ORDER BY job_id) FROM zim_pin_job}), 'done,failed,done,done',
	'... and done');
is($node->safe_psql('postgres', q{SELECT string_agg(p->>'ConvId', ',' ORDER BY p->>'ConvId') FROM jsonb_array_elements(double('State', '{"UserId": "u1"}')->'Pins') p}),
	'g2', '... in order: u1 pinned g1 and g2, then unpinned g1');
is($node->safe_psql('upg', q{SELECT nextval('zim_pin_job_job_id_seq') > 4}), 't', 'the job id sequence goes on');

# --- 1.1 with finished, replayed and pending jobs (issue 17) -------------------
# 1.4 gives every job an Action: the update keeps every job and failure row,
# each of them ConvPinned, and the pending jobs are then sent.  The library
# is already 1.4's (as after "make install" and the restart), and here its
# worker drains the 1.1 tables before the update, so a pending job may be
# sent before it: what was pending may be pending or done after it, never
# gone or changed.  One job is queued in the update's own transaction: that
# one is pending when the tables change, whatever the worker does.
$node->safe_psql('postgres', q{CREATE DATABASE upg11; SELECT register('u3')});
$node->safe_psql('upg11', q{CREATE EXTENSION zim_pin VERSION '1.1'});
$node->append_conf('postgresql.conf', "zim_pin.worker_database = 'upg11'\n");
$node->restart;
sub settled
{
	my ($db) = @_;
	return $node->poll_query_until($db, q{SELECT count(*) = 0 FROM zim_pin_job WHERE state = 'pending'});
}
my $states11 = q{SELECT string_agg(job_id || ' ' || state, '; ' ORDER BY job_id) FROM zim_pin_job};
$node->safe_psql('upg11', q{
	SELECT zim_conv_pinned_enqueue('u3', ARRAY['g1', 'u1', 'ghost'], ARRAY[2, 0, 0], true);
	SELECT zim_conv_pinned_enqueue('nobody', ARRAY['g5', 'g6'], 2, true);
});
ok(settled('upg11'), '1.1: the worker of the 1.4 library finished two jobs');
is($node->safe_psql('upg11', $states11), '1 done; 2 failed', '... one done, one failed');
is($node->safe_psql('upg11', q{SELECT count(*) FROM zim_pin_retry_failed(from_user_id => 'nobody')}), '1',
	'1.1: the failed job is replayed');
ok(settled('upg11'), '... and the replay sent (it failed again)');
$node->safe_psql('upg11', q{SELECT zim_conv_pinned_enqueue('u3', ARRAY['g7'], 2, true)});
# what a job is (never changes), and what a finished job came to
my $ident11 = q{SELECT string_agg(job_id || ' ' || from_user_id || ' ' || conv_ids::text || ' ' || conv_types::text || ' ' || pinned
	|| ' ' || enqueued_at || ' ' || coalesce(retried_by::text, '-') || ' ' || coalesce(retried_at::text, '-'), '; ' ORDER BY job_id) FROM zim_pin_job WHERE job_id <= 4};
my $finished11 = $node->safe_psql('upg11', q{SELECT string_agg(job_id::text, ',') FROM zim_pin_job WHERE state <> 'pending'});
my $outcome11 = qq{SELECT string_agg(job_id || ' ' || state || ' ' || attempts || ' ' || coalesce(last_code::text, '-') || ' '
	|| coalesce(last_message, '-') || ' ' || finished_at, '; ' ORDER BY job_id) FROM zim_pin_job WHERE job_id IN ($finished11)};
my $failures11 = qq{SELECT string_agg(job_id || ' ' || conv_id || ' ' || conv_type || ' ' || sub_code || ' ' || coalesce(sub_message, '-'),
	'; ' ORDER BY job_id, conv_id, conv_type) FROM zim_pin_job_failure WHERE job_id IN ($finished11)};
my ($ident_before, $outcome_before, $failures_before11) =
	map { $node->safe_psql('upg11', $_) } ($ident11, $outcome11, $failures11);
like($node->safe_psql('upg11', $states11), qr/^1 done; 2 failed; 3 failed; 4 (pending|done)$/,
	'1.1: a done, a failed (replayed), a failed replay and a pending (or sent) job');
like($failures_before11, qr/^1 ghost 0 660800001 .*; 2 g5 2 660500002 .*; 2 g6 2 660500002 .*; 3 g5 2 660500002 .*; 3 g6 2 660500002 /,
	'1.1: with their failure rows');

is($node->safe_psql('upg11', q{BEGIN;
	SELECT zim_conv_pinned_enqueue('u3', ARRAY['g1'], 2, false) = 5;
	ALTER EXTENSION zim_pin UPDATE;
	SELECT state || ' ' || action || ' ' || pinned FROM zim_pin_job WHERE job_id = 5;
	COMMIT}), "t\npending ConvPinned false",
	'1.1: a job queued in the transaction of ALTER EXTENSION zim_pin UPDATE is a pending ConvPinned job after it');
is($node->safe_psql('upg11', q{SELECT extversion FROM pg_extension WHERE extname = 'zim_pin'}), $default,
	"1.1: ALTER EXTENSION zim_pin UPDATE reaches $default");
is($node->safe_psql('upg11', $ident11), $ident_before, '1.1: every job is kept, as it was');
is($node->safe_psql('upg11', $outcome11), $outcome_before, '... the finished ones with their outcome');
is($node->safe_psql('upg11', $failures11), $failures_before11, '... and their failure rows');
is($node->safe_psql('upg11', q{SELECT count(*) || ' ' || count(*) FILTER (WHERE action = 'ConvPinned' AND pinned IS NOT NULL
		AND silenced IS NULL AND mark IS NULL AND marked IS NULL) FROM zim_pin_job}),
	'5 5', 'every job is a ConvPinned job, with its pinned and no other intent');
is($node->safe_psql('upg11', q{SELECT count(*) || ' ' || count(*) FILTER (WHERE action = 'ConvPinned' AND pinned
		AND silenced IS NULL AND mark IS NULL AND marked IS NULL) FROM zim_pin_failure WHERE job_id IN (} . $finished11 . q{)}),
	'5 5', 'zim_pin_failure shows action ConvPinned on every failure row');
ok(settled('upg11'), '1.1: the pending jobs are sent after the update');
is($node->safe_psql('upg11', $states11), '1 done; 2 failed; 3 failed; 4 done; 5 done', '... and done');
is($node->safe_psql('postgres', q{SELECT string_agg(p->>'ConvId', ',' ORDER BY p->>'ConvId') FROM jsonb_array_elements(double('State', '{"UserId": "u3"}')->'Pins') p}),
	'g7,u1', '... in order: u3 pinned g1, u1 and g7, then unpinned g1');
$node->safe_psql('upg11', q{SELECT zim_delete_conv_enqueue('u3', ARRAY['g7'], 2); SELECT zim_set_conv_mark_enqueue('u3', ARRAY['g7'], 2, 9, true)});
ok(settled('upg11'), 'the worker of the updated database sends jobs of the new Actions');
is($node->safe_psql('upg11', q{SELECT string_agg(action || ' ' || state, ', ' ORDER BY job_id) FROM zim_pin_job WHERE job_id > 5}),
	'DeleteConv done, SetConvMark done', '... and they are done');
is($node->safe_psql('postgres', q{SELECT (s->'Marks')::text || ' ' || (SELECT count(*) FROM jsonb_array_elements(s->'Requests') r WHERE r->>'User' = 'u3' AND r->>'Action' = 'DeleteConv')
	FROM double('State', '{"UserId": "u3"}') s}),
	'[{"Marks": [9], "ConvId": "g7", "ConvType": 2}] 1', '... as a delete and a mark, not as pins');

# --- a fresh install has the same objects ---------------------------------------
$node->safe_psql('fresh', q{CREATE EXTENSION zim_pin});

sub catalog
{
	my ($db) = @_;
	my ($out, $err);
	IPC::Run::run([ 'pg_dump', '--binary-upgrade', '--schema-only', '--no-owner', '-d', $node->connstr($db) ],
		'>', \$out, '2>', \$err) or die "pg_dump failed: $err";
	# OIDs and the list of configuration tables (by OID) differ by nature
	$out =~ s/^SELECT pg_catalog\.binary_upgrade_set_next_\w+\(.*\);\n//mg;
	$out =~ s/binary_upgrade_create_empty_extension\([^\n]*\)/binary_upgrade_create_empty_extension(...)/g;
	$out =~ s/^--.*\n//mg;
	# and so do the dump's session key, frozen xids, OIDs and the sequence's position
	$out =~ s/^\\(un)?restrict .*\n//mg;
	$out =~ s/^\s*SET relfrozenxid = .*\n//mg;
	$out =~ s/^\s*WHERE oid = '\d+';\n//mg;
	$out =~ s/^SELECT pg_catalog\.setval\(.*\n//mg;
	$out =~ s/\n{2,}/\n/g;
	return $out;
}
my ($fresh, $upgraded) = (catalog('fresh'), catalog('upg'));
cmp_ok(length $fresh, '>', 5000, 'pg_dump --binary-upgrade lists the extension\'s objects');
is($upgraded, $fresh, 'an upgraded database has the same objects, definitions, privileges and comments as a fresh one')
	or do
{
	my %f = map { $_ => 1 } split /\n/, $fresh;
	my %u = map { $_ => 1 } split /\n/, $upgraded;
	diag "only fresh: $_" for grep { !$u{$_} } split /\n/, $fresh;
	diag "only upgraded: $_" for grep { !$f{$_} } split /\n/, $upgraded;
};
my $upgraded11 = catalog('upg11');
is($upgraded11, $fresh, 'a database updated from 1.1 has the same objects, definitions, privileges and comments as a fresh one')
	or do
{
	my %f = map { $_ => 1 } split /\n/, $fresh;
	my %u = map { $_ => 1 } split /\n/, $upgraded11;
	diag "only fresh: $_" for grep { !$u{$_} } split /\n/, $fresh;
	diag "only updated from 1.1: $_" for grep { !$f{$_} } split /\n/, $upgraded11;
};
my $config = q{SELECT array_agg(c::regclass::text ORDER BY c::regclass::text) FROM pg_extension, unnest(extconfig) c WHERE extname = 'zim_pin'};
is($node->safe_psql('upg', $config), $node->safe_psql('fresh', $config), '... and the same tables that pg_dump keeps');
is($node->safe_psql('upg11', $config), $node->safe_psql('fresh', $config), '... as has the one updated from 1.1');

$node->stop;
done_testing();
