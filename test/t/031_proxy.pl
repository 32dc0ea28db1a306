# zim_pin.proxy (issue 18, item 2), against test/connect_proxy.py: calls
# and the queue go through an HTTP CONNECT proxy, TLS stays end to end and
# verified (the proxy sees only the CONNECT; a wrong CA still fails), the
# environment's proxy variables are never used, a proxy that refuses,
# drops the tunnel, hangs or is not there gives 08001 naming the proxy and
# is retried like a connection failure, and the proxy's credentials are
# never shown to another role, put in a message or logged.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use IO::Socket::INET;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use ZimTest;

my ($zim_port) = $ENV{ZIM_URL} =~ m{:(\d+)/?$} or die "no port in ZIM_URL";
my $zim_target = "127.0.0.1:$zim_port";
my $password = 'PxS3cretWord42';
my $user = 'pxproxyuser';
my $wrong = 'WrongPass9917';

# --- the proxies ------------------------------------------------------------
my @proxies;

sub start_proxy
{
	my (@extra) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my $h = IPC::Run::start(
		[ 'python3', "$FindBin::RealBin/../connect_proxy.py", '--port', '0',
		  '--port-file', "$dir/port", '--log', "$dir/log", '--mode-file', "$dir/mode", @extra ],
		'>', "$dir/out", '2>', "$dir/err");
	for (1 .. 100)
	{
		last if -s "$dir/port";
		select(undef, undef, undef, 0.1);
	}
	die "the proxy did not start" unless -s "$dir/port";
	my $p = { h => $h, dir => $dir, port => PostgreSQL::Test::Utils::slurp_file("$dir/port") };
	push @proxies, $p;
	return $p;
}

sub set_mode
{
	my ($p, $mode) = @_;
	open(my $fh, '>', "$p->{dir}/mode") or die $!;
	print $fh $mode;
	close $fh;
}

# the proxy's records: CONNECT decisions, and ends of tunnels
sub records
{
	my ($p) = @_;
	return () unless -e "$p->{dir}/log";
	return map { decode_json($_) } grep { /\S/ } split /\n/, PostgreSQL::Test::Utils::slurp_file("$p->{dir}/log");
}
sub connects { my ($p) = @_; return grep { exists $_->{method} } records($p); }
sub tunnels { my ($p) = @_; return grep { $_->{tunnel} } records($p); }

# the double's counters, asked directly (never through the proxy under test)
sub double_state
{
	my ($body) = @_;
	$body //= '{}';
	my $out = `curl -s --noproxy '*' --cacert '$ENV{ZIM_CERT_DIR}/ca.crt' -d '$body' $ENV{ZIM_URL}_test/state`;
	return decode_json($out);
}

my $plain = start_proxy();
my ($rc, $out, $err);
my $authed = start_proxy('--auth', "$user:$password");
my $dead_port = do
{
	my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1) or die $!;
	my $port = $s->sockport;
	close $s;
	$port;
};

# --- a server started with every proxy variable pointing at the proxy, and no
# NO_PROXY: a libcurl left to itself would use it
my $node;
{
	local $ENV{https_proxy} = "http://127.0.0.1:$plain->{port}";
	local $ENV{HTTPS_PROXY} = "http://127.0.0.1:$plain->{port}";
	local $ENV{http_proxy} = "http://127.0.0.1:$plain->{port}";
	local $ENV{ALL_PROXY} = "http://127.0.0.1:$plain->{port}";
	local $ENV{all_proxy} = "http://127.0.0.1:$plain->{port}";
	$node = zim_node('proxy', conf => "zim_pin.worker_database = 'postgres'\nzim_pin.job_max_attempts = 50\n");
}
# try(q): 'ok', or the error's SQLSTATE|message|detail|hint
my $try = q{
	CREATE FUNCTION try(q text) RETURNS text LANGUAGE plpgsql AS $$
	DECLARE s text; m text; d text; h text;
	BEGIN
		EXECUTE q;
		RETURN 'ok';
	EXCEPTION WHEN OTHERS THEN
		GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
		RETURN s || '|' || m || '|' || d || '|' || h;
	END $$};
$node->safe_psql('postgres', $try);
$node->safe_psql('postgres', q{
	SELECT double('Reset'); SELECT register('px_a', 'px_b', 'px_c');
	CREATE ROLE plain_role LOGIN;
	CREATE ROLE settings_reader LOGIN IN ROLE pg_read_all_settings;
	GRANT EXECUTE ON FUNCTION try(text) TO plain_role, settings_reader;
});
my $pin = q{SELECT count(*) FROM zim_conv_pinned('px_a', ARRAY['px_b'], 0, true)};

is($node->safe_psql('postgres', $pin), '0', 'zim_pin.proxy = \'\': the call succeeds');
is(scalar(connects($plain)), 0,
	'... directly: https_proxy, HTTPS_PROXY, http_proxy and ALL_PROXY in the server\'s environment are not used');

# --- through the proxy --------------------------------------------------------
# NO_PROXY in the environment bypasses nothing
{
	local $ENV{https_proxy} = "http://127.0.0.1:$dead_port";
	local $ENV{NO_PROXY} = '*';
	local $ENV{no_proxy} = '127.0.0.1,localhost';
	$node->restart;
}

sub set_proxy
{
	my ($value, $shown) = @_;
	$node->append_conf('postgresql.conf', "zim_pin.proxy = '$value'\n");
	$node->reload;
	$node->poll_query_until('postgres', qq{SELECT current_setting('zim_pin.proxy') = '$shown'})
	  or die "zim_pin.proxy did not become $shown";
	# the worker reads it at its next round; a new session at once
}

set_proxy("http://127.0.0.1:$plain->{port}", "http://127.0.0.1:$plain->{port}");
my $requests = scalar(@{ double_state()->{Requests} });
is($node->safe_psql('postgres', q{SELECT count(*) FROM zim_conv_pinned('px_a', ARRAY['px_c'], 0, true)}), '0',
	'through the proxy: the call succeeds');
my @c = connects($plain);
is(scalar(@c), 1, '... with one CONNECT, although NO_PROXY is * in the server\'s environment');
is("$c[0]{target} $c[0]{answer} $c[0]{auth}", "$zim_target 200 none", '... to the ZIM server\'s host and port');
ok(!grep({ !/^(host|user-agent|proxy-connection)$/ } @{ $c[0]{headers} }),
	"... carrying none of zim_pin's own headers (it sent: @{ $c[0]{headers} })");
is(scalar(@{ double_state()->{Requests} }), $requests + 1, '... and the double received the request');
is(join(',', sort map { $_->{ConvId} } @{ double_state('{"UserId": "px_a"}')->{Pins} }), 'px_b,px_c',
	'... which pinned the conversation');
my @t = tunnels($plain);
is(scalar(@t), 1, 'the session ended, and so did its tunnel');
ok($t[0]{tls} && !$t[0]{plain} && $t[0]{up} > 0 && $t[0]{down} > 0,
	'... which carried TLS only: no signed URL, Action or request line in clear text');

# a wrong CA: verification still happens, end to end through the tunnel
$requests = scalar(@{ double_state()->{Requests} });
my $r = $node->safe_psql('postgres', qq{
	SET zim_pin.ca_file = '$ENV{ZIM_CERT_DIR}/wrong_ca.crt';
	SELECT try(\$\$$pin\$\$)});
like($r, qr/^08001\|could not establish a verified TLS connection to the ZIM server\|SSL certificate problem: [^|]*\(Action ConvPinned\)\. ?\(?/,
	'a wrong CA through the proxy: 08001, the certificate is refused');
like($r, qr/through the proxy at 127\.0\.0\.1:$plain->{port}/, '... and the detail says the request went through the proxy');
is(scalar(@{ double_state()->{Requests} }), $requests, '... and nothing reached the double');
is((connects($plain))[-1]{answer}, 200, '... although the proxy opened the tunnel: TLS is not the proxy\'s');

# --- the proxy fails: 08001 naming the proxy, retried like a connection failure
my %failing = (
	'refuse' => [ qr/The proxy at 127\.0\.0\.1:$plain->{port} refused the tunnel with HTTP status 403/,
		qr/lets the server reach the host and port/ ],
	'bad-gateway' => [ qr/The proxy at 127\.0\.0\.1:$plain->{port} refused the tunnel with HTTP status 502/,
		qr/lets the server reach the host and port/ ],
	'drop' => [ qr/The proxy at 127\.0\.0\.1:$plain->{port} failed: /, qr/that the proxy is running/ ],
	'drop-after-200' => [
		qr/The proxy at 127\.0\.0\.1:$plain->{port} accepted the tunnel, then closed it before TLS with the ZIM server was established: /,
		qr/lets the server reach the host and port/ ],);
for my $mode (sort keys %failing)
{
	set_mode($plain, $mode);
	my $before = scalar(connects($plain));
	$requests = scalar(@{ double_state()->{Requests} });
	$r = $node->safe_psql('postgres', qq{SET zim_pin.max_retries = 2; SELECT try(\$\$$pin\$\$)});
	my ($state, $msg, $detail, $hint) = split /\|/, $r;
	is("$state|$msg", '08001|could not connect to the ZIM server through the proxy', "proxy $mode: 08001 through the proxy");
	like($detail, $failing{$mode}[0], "... the detail names the proxy and what it did");
	like($detail, qr/\(Action ConvPinned, 3 attempts\)\.$/, '... after 3 attempts');
	like($hint, $failing{$mode}[1], "... and the hint says what to check");
	is(scalar(connects($plain)) - $before, 3, '... which the proxy saw: retried like a connection failure');
	is(scalar(@{ double_state()->{Requests} }), $requests, '... and nothing reached the double');
}

# a proxy that hangs: the wait is cancellable and bounded by the connect timeout
set_mode($plain, 'hang');
my $t0 = time;
($rc, $out, $err) = $node->psql('postgres', qq{\\set VERBOSITY verbose\nSET statement_timeout = '1500ms';\n$pin});
like($err, qr/ERROR:  57014: canceling statement due to statement timeout/, 'a proxy that never answers: statement_timeout cancels the call');
ok(time - $t0 < 15, '... at once (' . (time - $t0) . ' s)');
$r = $node->safe_psql('postgres', qq{SET zim_pin.connect_timeout_ms = 1000; SET zim_pin.max_retries = 0; SELECT try(\$\$$pin\$\$)});
like($r, qr/^08001\|could not connect to the ZIM server through the proxy\|The proxy at 127\.0\.0\.1:$plain->{port} failed: [^|]*\(Action ConvPinned, 1 attempt\)\./,
	'... and zim_pin.connect_timeout_ms ends the CONNECT with 08001 naming the proxy');
set_mode($plain, 'tunnel');

# nothing listening at the proxy's address
set_proxy("http://127.0.0.1:$dead_port", "http://127.0.0.1:$dead_port");
$r = $node->safe_psql('postgres', qq{SET zim_pin.max_retries = 1; SELECT try(\$\$$pin\$\$)});
like($r, qr/^08001\|could not connect to the ZIM server through the proxy\|The proxy at 127\.0\.0\.1:$dead_port failed: [^|]*\(Action ConvPinned, 2 attempts\)\.\|Check zim_pin\.proxy, and that the proxy is running\.$/,
	'no proxy at that port: 08001 naming the proxy, retried');

# --- the queue: a refusing proxy is a transient failure of the job ------------
set_mode($plain, 'refuse');
set_proxy("http://127.0.0.1:$plain->{port}", "http://127.0.0.1:$plain->{port}");
my $job = $node->safe_psql('postgres', q{SELECT zim_silence_conv_notification_enqueue('px_b', ARRAY['px_a'], 0, true)});
ok($node->poll_query_until('postgres', qq{
		SELECT state = 'pending' AND attempts >= 1 AND last_code IS NULL
		FROM zim_pin_job WHERE job_id = $job}),
	'the queue through a refusing proxy: the job stays pending after a transport failure');
like($node->safe_psql('postgres', qq{SELECT last_message FROM zim_pin_job WHERE job_id = $job}),
	qr/^The proxy at 127\.0\.0\.1:$plain->{port} refused the tunnel with HTTP status 403/,
	'... whose message names the proxy and what it did');
set_mode($plain, 'tunnel');
my $before = scalar(connects($plain));
ok($node->poll_query_until('postgres', qq{SELECT state = 'done' FROM zim_pin_job WHERE job_id = $job}),
	'... then, the proxy working again, the worker sends it through the proxy');
ok(scalar(connects($plain)) > $before, '... (the proxy saw its CONNECT)');
is(join(',', map { $_->{ConvId} } @{ double_state('{"UserId": "px_b"}')->{Mutes} }), 'px_a',
	'... and the double muted the conversation');
$job = $node->safe_psql('postgres', q{SELECT zim_conv_pinned_enqueue('px_b', ARRAY['px_c'], 0, true)});
ok($node->poll_query_until('postgres', qq{SELECT state = 'done' FROM zim_pin_job WHERE job_id = $job}),
	'a second job through the proxy is done');

# --- credentials: used, and never shown -----------------------------------------
set_proxy("http://$user:$password\@127.0.0.1:$authed->{port}", "http://********\@127.0.0.1:$authed->{port}");
is($node->safe_psql('postgres', $pin), '0', 'a proxy that requires credentials: the call succeeds');
is(join(',', map { $_->{auth} } connects($authed)), 'ok', '... with the right credentials sent');
is($node->safe_psql('postgres', q{SHOW zim_pin.proxy}), "http://********\@127.0.0.1:$authed->{port}",
	'SHOW masks the user and password, to a superuser too');
is($node->safe_psql('postgres', q{SELECT setting || '|' || reset_val || '|' || boot_val FROM pg_settings WHERE name = 'zim_pin.proxy'}),
	"http://********\@127.0.0.1:$authed->{port}||", '... and so does pg_settings; reset_val is empty');
is($node->safe_psql('postgres', q{SELECT current_setting('zim_pin.proxy')}, connstr => 'dbname=postgres user=settings_reader'),
	"http://********\@127.0.0.1:$authed->{port}", 'pg_read_all_settings sees the masked value');
is($node->safe_psql('postgres', q{SHOW zim_pin.proxy}, connstr => 'dbname=postgres user=plain_role'),
	"http://********\@127.0.0.1:$authed->{port}", 'another role sees the masked value only');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_settings WHERE setting LIKE '%PxS3cret%' OR reset_val LIKE '%PxS3cret%' OR setting LIKE '%pxproxy' || 'user%'},
		connstr => 'dbname=postgres user=plain_role'),
	'0', '... and finds neither the user nor the password in pg_settings');

# the credentials in no message
set_mode($authed, 'refuse');
$r = $node->safe_psql('postgres', qq{SET zim_pin.max_retries = 0; SELECT try(\$\$$pin\$\$)});
like($r, qr/^08001\|could not connect to the ZIM server through the proxy\|The proxy at 127\.0\.0\.1:$authed->{port} refused the tunnel with HTTP status 403/,
	'a refusing proxy with credentials: 08001 naming the proxy by host and port');
unlike($r, qr/$password|$user/, '... and neither its user nor its password');
set_mode($authed, 'tunnel');

# wrong credentials: 407
set_proxy("http://$user:$wrong\@127.0.0.1:$authed->{port}", "http://********\@127.0.0.1:$authed->{port}");
$requests = scalar(@{ double_state()->{Requests} });
$r = $node->safe_psql('postgres', qq{SET zim_pin.max_retries = 0; SELECT try(\$\$$pin\$\$)});
is($r, "08001|could not connect to the ZIM server through the proxy|The proxy at 127.0.0.1:$authed->{port} refused the tunnel with HTTP status 407 (Action ConvPinned, 1 attempt).|Check the user and password in zim_pin.proxy.",
	'wrong credentials: 08001, the proxy\'s 407, and a hint about the user and password');
is((connects($authed))[-1]{auth}, 'wrong', '... the proxy saw wrong credentials');
is(scalar(@{ double_state()->{Requests} }), $requests, '... and nothing reached the double');
($rc, $out, $err) = $node->psql('postgres', qq{SET zim_pin.max_retries = 0;\n$pin});
like($err, qr/ERROR:  could not connect to the ZIM server through the proxy\nDETAIL:  The proxy at 127\.0\.0\.1:$authed->{port} refused the tunnel with HTTP status 407/,
	'the same failure raised to the client (and logged)');
$r = $node->safe_psql('postgres', qq{SELECT try(\$\$$pin\$\$)}, connstr => 'dbname=postgres user=plain_role');
like($r, qr/^(08001|42501)\|/, 'another role\'s failing call');
unlike($r, qr/$wrong|$user/, '... shows neither the user nor the password either');

# back to direct: the next request does not use the proxy
set_proxy('', '');
$before = scalar(connects($authed)) + scalar(connects($plain));
is($node->safe_psql('postgres', $pin), '0', 'zim_pin.proxy back to \'\': the call succeeds');
is(scalar(connects($authed)) + scalar(connects($plain)), $before, '... directly');

# --- the logs ------------------------------------------------------------------
$node->stop;
my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile);
unlike($log, qr/$password/, 'the server log holds no proxy password');
unlike($log, qr/$wrong/, '... not the wrong one either');
unlike($log, qr/$user/, '... nor the proxy user');
unlike($log, qr/parameter "zim_pin\.proxy" changed to/, '... and no "parameter changed" line for zim_pin.proxy');
like($log, qr/refused the tunnel with HTTP status 407/, '(the log does hold the proxy failures themselves)');

# --- credentials without preloading: refused ----------------------------------
my $bare = zim_node('bare', preload => 0, secret_file => 1,
	conf => "zim_pin.proxy = 'http://$user:$password\@127.0.0.1:$authed->{port}'\n");
$bare->safe_psql('postgres', $try);
$r = $bare->safe_psql('postgres', qq{SELECT try(\$\$$pin\$\$)});
like($r, qr/^55000\|/, 'without preloading, a proxy with credentials makes the call raise 55000');
unlike($r, qr/$password|$user/, '... without quoting them');
$bare->stop;
unlike(PostgreSQL::Test::Utils::slurp_file($bare->logfile), qr/$password/, '... nor logging them');

done_testing();

# the proxies go with the test, also when it dies half way
END
{
	local $?;    # the test's exit status, not the proxies'
	$_->{h}->kill_kill for @proxies;
}
