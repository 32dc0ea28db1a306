# pg_stat_activity says what a zim_pin backend waits for: on PostgreSQL 17
# and later its own wait events (ZimPinNetwork while an exchange is on the
# wire, ZimPinRateLimit while the limiter holds a request, ZimPinBackoff
# before a retry), on 15 and 16 the generic "Extension".  On 18 the module
# declares its name and version (PG_MODULE_MAGIC_EXT).
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use ZimTest;

my $node = zim_node('waits');
my $version = $node->safe_psql('postgres', 'SHOW server_version_num');
my $named = $version >= 170000;
$node->safe_psql('postgres', q{SELECT double('Reset'); SELECT register('w_a', 'w_b')});

# start a call in the background; returns its IPC::Run handle
sub start_call
{
	my ($sql, $out) = @_;
	return IPC::Run::start(
		[ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-c', $sql ],
		'>', $out, '2>', $out);
}

# the wait events seen in the calling backend within 5 s, as "type:event"
sub waits_of
{
	my ($tag, $want) = @_;
	my %seen;
	my $t0 = time;
	while (time - $t0 < 5)
	{
		my $w = $node->safe_psql('postgres', qq{
			SELECT coalesce(wait_event_type, '') || ':' || coalesce(wait_event, '')
			FROM pg_stat_activity WHERE query LIKE '%$tag%' AND pid <> pg_backend_pid()});
		$seen{$w} = 1 if $w ne '';
		last if $seen{$want};
		Time::HiRes::sleep(0.05);
	}
	return join(' ', sort keys %seen);
}

# --- waiting on the network ---------------------------------------------------
$node->safe_psql('postgres',
	q{SELECT double('Fault', '{"Fault": "hang", "Ms": 3000, "Count": 1, "Action": "ConvPinned"}')});
my $out = '';
my $h = start_call(q{SELECT 'net-wait', count(*) FROM zim_conv_pinned('w_a', ARRAY['w_b'], 0, true)}, \$out);
my $want = $named ? 'Extension:ZimPinNetwork' : 'Extension:Extension';
my $seen = waits_of('net-wait', $want);
like($seen, qr/\Q$want\E/, "a request on the wire waits as $want (seen: $seen)");
$h->finish;

# --- held by the limiter -------------------------------------------------------
# 60 one-conversation requests at 20 a second: most of 3 s in the limiter
$out = '';
$h = start_call(q{SET zim_pin.max_convs_per_request = 1;
	SELECT 'rate-wait', count(*) FROM zim_conv_pinned('w_a', ARRAY(SELECT 'g' || i FROM generate_series(1, 60) i), 2, true)}, \$out);
$want = $named ? 'Extension:ZimPinRateLimit' : 'Extension:Extension';
$seen = waits_of('rate-wait', $want);
like($seen, qr/\Q$want\E/, "a request held by the limiter waits as $want (seen: $seen)");
$h->finish;
like($out, qr/rate-wait\|0/, '... and the call then pinned all 60');

# --- backing off before a retry ------------------------------------------------
$node->safe_psql('postgres',
	q{SELECT double('Fault', '{"Fault": "code", "Code": 660000001, "Count": 2, "Action": "ConvPinned"}')});
$out = '';
$h = start_call(q{SELECT 'backoff-wait', count(*) FROM zim_conv_pinned('w_a', ARRAY['w_b'], 0, false)}, \$out);
$want = $named ? 'Extension:ZimPinBackoff' : 'Extension:Extension';
$seen = waits_of('backoff-wait', $want);
like($seen, qr/\Q$want\E/, "a request backing off waits as $want (seen: $seen)");
$h->finish;
like($out, qr/backoff-wait\|0/, '... and the retry then succeeded');

# --- the module's name and version (18) ----------------------------------------
# (pg_get_loaded_modules and PG_MODULE_MAGIC_EXT are new in 18)
if ($version >= 180000)
{
	is($node->safe_psql('postgres',
			q{SELECT module_name || ' ' || version FROM pg_get_loaded_modules() WHERE file_name LIKE 'zim_pin%'}),
		'zim_pin 1.5', 'the module declares its name and version');
}

$node->stop;
done_testing();
