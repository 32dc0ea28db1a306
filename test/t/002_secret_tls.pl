# The secret never shows: not at debug5, not when a reload changes it, not
# in any message; and TLS verifies the server's name as well as its CA.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use Test::More;
use ZimTest;

my $secret = zim_secret();
my $node = zim_node('secret', conf => "log_min_messages = debug5\nlog_error_verbosity = verbose\n");
$node->safe_psql('postgres', q{SELECT double('Reset'); SELECT register('s_a', 's_b')});

# --- a reload that changes the secret logs neither value -------------------
my $other = 'b9e1c0ffee0ddba11b9e1c0ffee0ddba';
$node->append_conf('postgresql.conf', "zim_pin.server_secret = '$other'\n");
$node->reload;
# wait for the reload to take effect: the double now rejects our signature
$node->poll_query_until('postgres', q{
	SELECT (zim_api('UserRegister', '{"UserInfo": []}'))->>'Code' = '100000005'})
  or die 'reload did not take effect';
my ($ret, $out, $err) = $node->psql('postgres',
	q{SELECT * FROM zim_conv_pinned('s_a', ARRAY['s_b'], 0, true)},
	extra_params => ['-v', 'VERBOSITY=verbose']);
like($err, qr/ZP003/, 'a changed secret takes effect on reload (ZP003 from the double)');
$node->append_conf('postgresql.conf', "zim_pin.server_secret = '$secret'\n");
$node->reload;
$node->poll_query_until('postgres', q{
	SELECT (zim_api('UserRegister', '{"UserInfo": []}'))->>'Code' <> '100000005'})
  or die 'second reload did not take effect';
is($node->safe_psql('postgres', q{SELECT count(*) FROM zim_conv_pinned('s_a', ARRAY['s_b'], 0, true)}),
	'0', 'the restored secret works again');

# --- every client-visible field of every error ------------------------------
($ret, $out, $err) = $node->psql('postgres', q{
	\set VERBOSITY verbose
	\set SHOW_CONTEXT always
	SELECT double('Config', '{"SecretRotated": true}');
	SELECT * FROM zim_conv_pinned('s_a', ARRAY['s_b'], 0, true);
	SELECT double('Config', '{"SecretRotated": false}');
	SELECT * FROM zim_conv_pinned('nobody', ARRAY['s_b'], 0, true);
	SET zim_pin.api_url = 'https://127.0.0.1:1/';
	SET zim_pin.max_retries = 0;
	SELECT * FROM zim_conv_pinned('s_a', ARRAY['s_b'], 0, true);
	RESET zim_pin.api_url;
	SELECT double('Fault', '{"Fault": "nonjson", "Count": 1}');
	SELECT * FROM zim_conv_pinned('s_a', ARRAY['s_b'], 0, true);
	SHOW zim_pin.server_secret;
	SELECT current_setting('zim_pin.server_secret');
	SELECT reset_val, boot_val FROM pg_settings WHERE name LIKE 'zim_pin.%';
	SELECT * FROM pg_show_all_settings() WHERE name LIKE 'zim_pin.%';
}, on_error_stop => 0);
unlike($out . $err, qr/\Q$secret\E/, 'no message, detail, hint, context or result shows the secret');
like($err, qr/ZP003.*ZP004.*08001.*ZP005/s, '... while the errors themselves were raised');

# --- the server log, at debug5 ----------------------------------------------
my $log = slurp_file($node->logfile);
cmp_ok(length($log), '>', 10000, 'the server log at debug5 has content');
unlike($log, qr/\Q$secret\E/, 'the server log at debug5 never shows the secret');
unlike($log, qr/\Q$other\E/, '... nor the secret a reload replaced');
unlike($log, qr/Signature=[0-9a-f]/i, '... nor a signed URL');
unlike($log, qr/parameter "zim_pin.server_secret" changed/, '... nor a "changed to" line for the secret');
like($log, qr/zim_pin: ConvPinned RequestId [0-9a-f]+ Code 0/, '... while the DEBUG1 line per request is there');

# --- TLS: a certificate for another name is refused --------------------------
my $dir = PostgreSQL::Test::Utils::tempdir;
my $ca = $ENV{ZIM_CERT_DIR};
system_or_bail('openssl', 'req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=zim.invalid',
	'-keyout', "$dir/other.key", '-out', "$dir/other.csr");
open(my $ext, '>', "$dir/ext.cnf") or die;
print $ext "subjectAltName = DNS:zim.invalid\n";
close $ext;
system_or_bail('openssl', 'x509', '-req', '-in', "$dir/other.csr", '-CA', "$ca/ca.crt",
	'-CAkey', "$ca/ca.key", '-CAcreateserial', '-CAserial', "$dir/ca.srl", '-days', '2',
	'-extfile', "$dir/ext.cnf", '-out', "$dir/other.crt");
my $portfile = "$dir/port";
my $double = IPC::Run::start(['python3', "$ENV{ZIM_WORK}/test/zim_double.py", '--port', '0',
	'--port-file', $portfile, '--cert', "$dir/other.crt", '--key', "$dir/other.key",
	'--app-id', $ENV{ZIM_APP_ID}, '--secret', $secret]);
for (1 .. 100) { last if -s $portfile; select(undef, undef, undef, 0.1); }
my $port = slurp_file($portfile);
chomp $port;
($ret, $out, $err) = $node->psql('postgres', qq{
	SET zim_pin.api_url = 'https://127.0.0.1:$port/';
	SELECT zim_api('UserRegister', '{"UserInfo": []}');
}, extra_params => ['-v', 'VERBOSITY=verbose']);
like($err, qr/08001: could not establish a verified TLS connection.*\n.*DETAIL:.*(certificate|host)/i,
	'a certificate from the right CA for another host name is refused with 08001');
$double->kill_kill;

$node->stop;
done_testing();
