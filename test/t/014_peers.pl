# Slow and vanishing peers, and mutated answers (issue 7, item 13).
#
# A peer that drips its answer, stalls after its headers, never finishes
# the TLS handshake, or closes or resets the connection at any point ends
# in success (after a retry) or in the contract's 08001/08006 within the
# configured time, and a cancel acts at once.  Then a mutation fuzzer
# (seeded, so a failure can be replayed) sends hundreds of broken bodies
# and broken HTTP answers: each call ends in success or one of the
# contract's SQLSTATEs, never any other, in bounded time, and the queue
# records every one of them as a job outcome.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use List::Util;
use MIME::Base64 qw(encode_base64);
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use ZimTest;

my $node = zim_node('peers', conf => "zim_pin.connect_timeout_ms = 1000\nzim_pin.timeout_ms = 1500\n");
$node->safe_psql('postgres', q{SELECT double('Reset')});
is($node->safe_psql('postgres', q{SELECT register('p1')}), '0', 'user registered');
my $call = q{SELECT count(*) FROM zim_conv_pinned('p1', ARRAY['g1'], 2, true)};

# run SQL in a new session; returns (SQLSTATE or 'ok', seconds)
sub outcome
{
	my ($sql) = @_;
	my $t0 = time;
	my ($ret, $out, $err) = $node->psql('postgres', $sql, extra_params => ['-v', 'VERBOSITY=verbose']);
	my $took = time - $t0;
	return ('ok', $took) if $ret == 0;
	my ($state) = $err =~ /ERROR:  ([0-9A-Z]{5}):/;
	return ($state // "no SQLSTATE in: $err", $took);
}

# (a connection fault hits the next new connection, whoever opens it)
sub fault
{
	my ($json) = @_;
	$node->safe_psql('postgres', qq{SELECT double('Fault', '{"Fault": "clear"}'); SELECT double('Fault', '$json')});
}


# --- slow peers --------------------------------------------------------------
my ($state, $took);
fault('{"Fault": "drip", "Ms": 200}');
($state, $took) = outcome("SET zim_pin.max_retries = 0; $call");
is($state, '08006', 'an answer dripping one byte every 200 ms ends in 08006');
cmp_ok($took, '<', 4, sprintf('... after zim_pin.timeout_ms (%.2f s)', $took));

fault('{"Fault": "drip", "Ms": 200}');
($state, $took) = outcome("SET zim_pin.max_retries = 0; SET statement_timeout = '300ms'; $call");
is($state, '57014', 'statement_timeout ends a call whose answer drips');
cmp_ok($took, '<', 1.5, sprintf('... at once (%.2f s)', $took));

fault('{"Fault": "drip", "Ms": 3}');
($state, $took) = outcome("SET zim_pin.max_retries = 0; $call");
is($state, 'ok', 'a slow but steady answer (3 ms a byte) is read whole');

fault('{"Fault": "stall"}');
($state, $took) = outcome("SET zim_pin.max_retries = 0; $call");
is($state, '08006', 'headers and then nothing ends in 08006');
cmp_ok($took, '<', 4, sprintf('... after zim_pin.timeout_ms (%.2f s)', $took));

fault('{"Fault": "connstall"}');
($state, $took) = outcome("SET zim_pin.max_retries = 0; $call");
is($state, '08001', 'a TLS handshake that never ends is 08001 (could not connect)');
cmp_ok($took, '<', 3, sprintf('... after zim_pin.connect_timeout_ms (%.2f s)', $took));

# --- vanishing peers ---------------------------------------------------------
for my $kind (qw(vanish reset conndrop connreset))
{
	my $expect = $kind =~ /^conn/ ? '08001' : '08006';
	fault(qq{{"Fault": "$kind"}});
	($state) = outcome("SET zim_pin.max_retries = 0; $call");
	is($state, $expect, "a peer that does \"$kind\" ends in $expect without retries");
	fault(qq{{"Fault": "$kind"}});
	($state) = outcome("SET zim_pin.max_retries = 1; $call");
	is($state, 'ok', '... and in success with one retry');
}
is($node->safe_psql('postgres', q{SELECT count(*) FROM jsonb_array_elements(double('State', '{"UserId": "p1"}')->'Pins')}),
	'1', 'the double holds the pin');

# --- mutation fuzzing ----------------------------------------------------------
my $seed = $ENV{ZIM_FUZZ_SEED} || 20261126;
srand($seed);
note "fuzz seed $seed (ZIM_FUZZ_SEED replays it)";

my @seeds = (
	'{"Code":0,"Message":"success","RequestId":"r1","ErrorList":[]}',
	'{"Code":0,"Message":"success","RequestId":"r1","ErrorList":[{"ConvId":"g1","ConvType":2,"SubCode":660800048,"SubMessage":"too many pins"}]}',
	'{"Code":660300005,"Message":"rate limited","RequestId":"r2","ErrorList":[]}',
	'{"Code":660500002,"Message":"user not registered","RequestId":"r3"}',
);
my @atoms = ('{', '}', '[', ']', '"', ':', ',', '\\', '\\u0000', '\\ud800', '\\udc00', "\x00", "\xff", "\xc3",
	"\xe2\x82", '1e999999', '-1e-999999', '9' x 400, 'null', 'true', '-', '.', 'e', '0x10', 'NaN',
	'"ErrorList"', '"Code"', '"ConvId"', '[' x 5000, '{"a":' x 3000, ' ' x 1000, "\r\n");

sub mutate
{
	my ($s) = @_;
	for (1 .. 1 + int(rand(3)))
	{
		my $at = int(rand(length($s) + 1));
		my $op = int(rand(6));
		if ($op == 0) { substr($s, $at, 1, chr(int(rand(256)))) if $at < length $s; }
		elsif ($op == 1) { substr($s, $at, 1 + int(rand(8)), ''); }
		elsif ($op == 2) { substr($s, $at, 0, $atoms[ int(rand(@atoms)) ]); }
		elsif ($op == 3) { my $len = int(rand(40)); substr($s, $at, 0, substr($s, int(rand(length $s)), $len)); }
		elsif ($op == 4) { $s = substr($s, 0, $at); }
		else { substr($s, $at, 0, $atoms[ int(rand(@atoms)) ] x (1 + int(rand(50)))); }
	}
	return $s;
}

sub http_answer
{
	my ($body) = @_;
	my $head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " . length($body) . "\r\n";
	my $r = rand();
	return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" . sprintf('%x', length $body) . "\r\n$body\r\n0\r\n\r\n"
		if $r < 0.3;
	return "$head\r\n$body";
}

# ZIM_FUZZ_CASES=N sends N bodies and N/2 whole answers instead (a longer hunt)
my $n_bodies = $ENV{ZIM_FUZZ_CASES} || 300;
my $n_raw = int($n_bodies / 2);
my (@cases);
push @cases, ['body', mutate($seeds[ int(rand(@seeds)) ])] for 1 .. $n_bodies;
push @cases, ['raw', mutate(http_answer($seeds[ int(rand(@seeds)) ]))] for 1 .. $n_raw;

# Setting the next fault is a zim_api call like any other: a peer that left
# junk behind an answer that looked whole can make it fail (08006, which
# zim_api does not retry: it may not be idempotent).  That is no fuzz
# outcome: set it again, and count it.
$node->safe_psql('postgres', q{
	CREATE TABLE fuzz_setup (state text);
	CREATE FUNCTION set_fault(kind text, data text) RETURNS void LANGUAGE plpgsql AS $$
	DECLARE st text;
	BEGIN
		FOR attempt IN 1..3 LOOP
			BEGIN
				PERFORM double('Fault', jsonb_build_object('Fault', kind,
					CASE kind WHEN 'raw' THEN 'Raw' ELSE 'Body' END, data, 'Base64', true));
				RETURN;
			EXCEPTION WHEN OTHERS THEN
				GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE;
				INSERT INTO fuzz_setup VALUES (st);
				IF attempt = 3 THEN RAISE; END IF;
			END;
		END LOOP;
	END $$;
});
$node->safe_psql('postgres', q{
	CREATE TABLE fuzz (i int, kind text, data text, state text, ms float8);
	CREATE FUNCTION fuzz_one(i int, kind text, data text) RETURNS void LANGUAGE plpgsql AS $$
	DECLARE t0 timestamptz := clock_timestamp(); st text := 'ok';
	BEGIN
		PERFORM set_fault(kind, data);
		BEGIN
			PERFORM * FROM zim_conv_pinned('p1', ARRAY['g1', 'g2'], 2, true);
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE;
		END;
		INSERT INTO fuzz VALUES (i, kind, data, st, extract(epoch FROM clock_timestamp() - t0) * 1000);
	END $$;
});
# in sessions of 500 cases, each well within the harness's timeout
my ($ret, $out, $err) = (0, '', '');
my $t0 = time;
for (my $from = 0; $from <= $#cases && $ret == 0; $from += 500)
{
	my $sql = "SET zim_pin.max_retries = 0;\n";
	for my $i ($from .. List::Util::min($from + 499, $#cases))
	{
		my $b64 = encode_base64($cases[$i][1], '');
		$sql .= "SELECT fuzz_one($i, '$cases[$i][0]', '$b64');\n";
	}
	($ret, $out, $err) = $node->psql('postgres', $sql, on_error_stop => 0);
	diag "session of cases $from..: $err" if $err ne '';
	$ret = 1 if $err ne '';
}
my $fuzz_took = time - $t0;
is($ret, 0, sprintf('%d mutated answers (%d bodies, %d whole HTTP answers) in %.1f s, in one session',
	scalar @cases, $n_bodies, $n_raw, $fuzz_took)) or diag $err;
my $allowed = q{('ok', '08001', '08006', 'ZP001', 'ZP002', 'ZP003', 'ZP004', 'ZP005')};
is($node->safe_psql('postgres', "SELECT count(*) FROM fuzz WHERE state NOT IN $allowed"), '0',
	'each ended in success or one of the contract\'s SQLSTATEs')
	or diag $node->safe_psql('postgres', "SELECT i, kind, state, left(convert_from(decode(data, 'base64'), 'SQL_ASCII'), 200) FROM fuzz WHERE state NOT IN $allowed LIMIT 5");
note $node->safe_psql('postgres', q{SELECT string_agg(state || ': ' || n, ', ') FROM (SELECT state, count(*) n FROM fuzz GROUP BY 1 ORDER BY 1) s});
cmp_ok($node->safe_psql('postgres', q{SELECT max(ms) FROM fuzz}), '<', 3000, '... each within zim_pin.timeout_ms and a margin');
is($node->safe_psql('postgres', q{SELECT count(*) FROM fuzz_setup WHERE state NOT IN ('08001', '08006')}), '0',
	'setting a fault after a hostile answer failed, if ever, only with 08001 or 08006');
note 'fault settings that had to be repeated: ' . $node->safe_psql('postgres', q{SELECT count(*) FROM fuzz_setup});
cmp_ok($node->safe_psql('postgres', q{SELECT count(DISTINCT state) FROM fuzz}), '>=', 3, '... and the mutations reached several outcomes');

# the same answers through the queue: every one is recorded as the job's outcome
$node->safe_psql('postgres', q{
	CREATE TABLE fuzzq (i int, job bigint, warned text);
	CREATE FUNCTION fuzz_queue(i int, kind text, data text) RETURNS void LANGUAGE plpgsql AS $$
	DECLARE j bigint;
	BEGIN
		PERFORM set_fault(kind, data);
		j := zim_conv_pinned_enqueue('fzq' || i, ARRAY['g1', 'g2'], 2, true);
		INSERT INTO fuzzq VALUES (i, j, NULL);
	END $$;
});
my @queued = grep { $_ % 5 == 0 } 0 .. $#cases;
$err = '';
for (my $from = 0; $from <= $#queued && $ret == 0; $from += 200)
{
	my $sql = "SET client_min_messages = warning;\n";
	for my $i (@queued[ $from .. List::Util::min($from + 199, $#queued) ])
	{
		my $b64 = encode_base64($cases[$i][1], '');
		$sql .= "BEGIN; SELECT fuzz_queue($i, '$cases[$i][0]', '$b64'); COMMIT; SELECT zim_pin_run_jobs();\n";
	}
	my $e;
	($ret, $out, $e) = $node->psql('postgres', $sql);
	$err .= $e;
}
my $n_queued = scalar @queued;
is($ret, 0, "the queue took $n_queued of them through zim_pin_run_jobs") or diag $err;
unlike($err, qr/WARNING/, '... with no error escaping a job\'s outcome (no WARNING)');
is($node->safe_psql('postgres', q{SELECT count(*) FROM zim_pin_job j JOIN fuzzq q ON q.job = j.job_id
		WHERE j.attempts >= 1 AND (j.state <> 'pending' OR j.last_message IS NOT NULL)}),
	$n_queued, '... and every job has the outcome of its attempts recorded (later calls retried the transient ones)')
	or diag $node->safe_psql('postgres', q{SELECT q.i, j.state, j.attempts, j.last_message FROM zim_pin_job j JOIN fuzzq q ON q.job = j.job_id
		WHERE NOT (j.attempts >= 1 AND (j.state <> 'pending' OR j.last_message IS NOT NULL)) LIMIT 10});

ok(!$node->log_contains('terminated by signal'), 'no backend crashed');
is($node->safe_psql('postgres', q{SELECT double('Fault', '{"Fault": "clear"}')->>'Code'; } . $call), "0\n0",
	'the server keeps working');
$node->stop;
done_testing();
