# The conversation family where time and concurrency matter: each Action
# keeps its own 20 per sliding second while another runs at its own, and a
# 200-conversation delete (200 requests, 10 s at 20/s) ends promptly on
# statement_timeout and on pg_cancel_backend, leaving the backend usable
# and the rest unsent.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use ZimTest;

my $node = zim_node('family');
$node->safe_psql('postgres', q{SELECT double('Reset'); SELECT register('fa_a', 'fa_b', 'fa_c')});

sub requests
{
	my ($action) = @_;
	return $node->safe_psql('postgres', qq{SELECT count(*) FROM jsonb_array_elements(double('State')->'Requests') r
		WHERE r->>'Action' = '$action'});
}

# --- each Action at its own rate ---------------------------------------------
# 60 deletes and 60 clears at once: 60 requests each.  Alone each takes 3 s at
# 20/s; a limit shared by the two would hold them to 20/s together.
my @runs;
for my $sql (q{SELECT count(*) FROM zim_delete_conv('fa_a', ARRAY(SELECT 'd' || i FROM generate_series(1, 60) i), 2)},
	q{SELECT count(*) FROM zim_clear_conversation_unread('fa_b', ARRAY(SELECT 'fa_c' FROM generate_series(1, 60) i), 0)})
{
	my %r = (out => '', err => '');
	$r{h} = IPC::Run::start([ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-c', $sql ],
		'>', \$r{out}, '2>', \$r{err});
	push @runs, \%r;
}
$_->{h}->finish for @runs;
is($runs[0]{out}, "0\n", 'the 60 deletes succeeded');
is($runs[1]{out}, "60\n", 'the 60 clears each came back as a row (fa_b has no such conversation)');
is($node->safe_psql('postgres', q{SELECT (s->'MaxInAnyWindow'->>'DeleteConv')::int <= 20
	AND (s->'MaxInAnyWindow'->>'ClearConversationUnread')::int <= 20 FROM double('State') s}),
	't', 'neither Action passed 20 requests in any sliding second');
# together they did pass 20 in some second: each had its own limit
my $together = $node->safe_psql('postgres', q{
	WITH t AS (SELECT (r->>'T')::float8 AS t FROM jsonb_array_elements(double('State')->'Requests') r
	           WHERE r->>'Action' IN ('DeleteConv', 'ClearConversationUnread'))
	SELECT max((SELECT count(*) FROM t u WHERE u.t >= t.t AND u.t < t.t + 1)) FROM t});
cmp_ok($together, '>', 25, "together they sent $together in one sliding second: each Action counts on its own");
is(requests('DeleteConv') . ' ' . requests('ClearConversationUnread'), '60 60', 'one request per conversation');

# --- a 200-conversation delete, cancelled ------------------------------------
$node->safe_psql('postgres', q{SELECT double('Reset'); SELECT register('fa_a')});
my $t0 = time;
my ($ret, $out, $err) = $node->psql('postgres', q{
	SET statement_timeout = '2s';
	SELECT count(*) FROM zim_delete_conv('fa_a', ARRAY(SELECT 'd' || i FROM generate_series(1, 200) i), 2);},
	extra_params => ['-v', 'VERBOSITY=verbose']);
my $took = time - $t0;
like($err, qr/ERROR:  57014: canceling statement due to statement timeout/, 'statement_timeout ends the delete with 57014');
cmp_ok($took, '<', 6, sprintf('... promptly (%.1f s for a call of 10 s)', $took));
my $sent = requests('DeleteConv');
cmp_ok($sent, '<', 120, "... with the rest unsent ($sent of 200 went)");
is($node->safe_psql('postgres', q{SELECT count(*) FROM zim_delete_conv('fa_a', ARRAY['d1'], 2)}), '0',
	'the next call works');

# pg_cancel_backend from another session, a second in
my %bg = (out => '', err => '');
$bg{h} = IPC::Run::start([ 'psql', '-XAtq', '-v', 'VERBOSITY=verbose', '-d', $node->connstr('postgres'), '-c',
	q{SELECT count(*) FROM zim_delete_conv('fa_a', ARRAY(SELECT 'e' || i FROM generate_series(1, 200) i), 2) /* cancel me */} ],
	'>', \$bg{out}, '2>', \$bg{err});
$node->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_stat_activity WHERE query LIKE '%cancel me%' AND pid <> pg_backend_pid()});
usleep(1_000_000);
$t0 = time;
$node->safe_psql('postgres', q{SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%cancel me%' AND pid <> pg_backend_pid()});
$bg{h}->finish;
$took = time - $t0;
like($bg{err}, qr/ERROR:  57014: canceling statement due to user request/, 'pg_cancel_backend ends the delete with 57014');
cmp_ok($took, '<', 3, sprintf('... promptly (%.1f s after the cancel)', $took));
my $sent2 = requests('DeleteConv') - $sent - 1;
cmp_ok($sent2, '<', 150, "... with the rest unsent ($sent2 of 200 went)");

# the limiter was given back what the cancelled calls reserved: a new call
# is not held behind them
$t0 = time;
is($node->safe_psql('postgres', q{SELECT count(*) FROM zim_delete_conv('fa_a', ARRAY['x1', 'x2'], 2)}), '0',
	'a call after the cancels works');
cmp_ok(time - $t0, '<', 2, '... without waiting for the slots the cancelled calls had reserved');

$node->stop;
done_testing();
