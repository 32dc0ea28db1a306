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
my $config = q{SELECT array_agg(c::regclass::text ORDER BY c::regclass::text) FROM pg_extension, unnest(extconfig) c WHERE extname = 'zim_pin'};
is($node->safe_psql('upg', $config), $node->safe_psql('fresh', $config), '... and the same tables that pg_dump keeps');

$node->stop;
done_testing();
