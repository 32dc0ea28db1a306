# The queue under faults (issue 7, items 6 and 7): the worker works in a
# LATIN1 database, with non-ASCII ids and an answer in another script; an
# ERROR while a job is recorded is recorded on the job, which fails after
# zim_pin.job_max_attempts instead of being sent without end, in the worker
# and in zim_pin_run_jobs.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use ZimTest;

my $node = zim_node('qfaults', conf => <<'CONF');
zim_pin.worker_database = 'lat1'
zim_pin.job_max_attempts = 3
CONF
$node->safe_psql('postgres', q{SELECT double('Reset')});
$node->safe_psql('postgres',
	q{CREATE DATABASE lat1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0});
$node->safe_psql('lat1', q{CREATE EXTENSION zim_pin;
	CREATE FUNCTION double(action text, body jsonb DEFAULT '{}')
	RETURNS jsonb LANGUAGE sql AS $$ SELECT zim_api('Test' || action, body) $$});
# psql talks UTF-8; the database stores LATIN1
sub lat1 { my ($sql) = @_; return $node->safe_psql('lat1', "SET client_encoding = 'UTF8'; $sql"); }

# --- 6. non-ASCII ids in a LATIN1 database, through the worker ---------------
# (user ids are ASCII by the vendor's rules; conversation ids are not)
is(lat1(q{SELECT (zim_api('UserRegister', '{"UserInfo": [{"UserId": "lat_u", "UserName": "Zoë", "UserAvatar": ""}, {"UserId": "lat_v", "UserName": "v", "UserAvatar": ""}]}'))->>'Code'}),
	'0', 'users registered from a LATIN1 database, one named "Zoë"');
lat1(q{SELECT zim_conv_pinned_enqueue('lat_u', ARRAY['grüppe', 'café'], 2, true)});
ok($node->poll_query_until('lat1', q{SELECT count(*) = 0 FROM zim_pin_job WHERE state = 'pending'}),
	'the worker sent a job for the groups "grüppe" and "café"');
is(lat1(q{SELECT state || ' ' || attempts FROM zim_pin_job ORDER BY job_id DESC LIMIT 1}), 'done 1',
	'... at the first attempt');
is($node->safe_psql('postgres', q{SET client_encoding = 'UTF8';
	SELECT string_agg(p->>'ConvId', ',' ORDER BY p->>'ConvId') FROM jsonb_array_elements(double('State', '{"UserId": "lat_u"}')->'Pins') p}),
	'café,grüppe', '... and the double holds both pins, in UTF-8');

# an answer in another script: what LATIN1 cannot hold becomes "?"
# (the fault is set from a UTF8 database: LATIN1 cannot even say it)
$node->safe_psql('postgres', q{SET client_encoding = 'UTF8'; SELECT double('Fault', '{"Fault": "body", "Body": "{\"Code\": 0, \"Message\": \"\", \"RequestId\": \"r\", \"ErrorList\": [{\"ConvId\": \"grüppe\", \"ConvType\": 2, \"SubCode\": 660800048, \"SubMessage\": \"置顶失败 é\"}]}"}')});
lat1(q{SELECT zim_conv_pinned_enqueue('lat_u', ARRAY['grüppe', 'café'], 2, true)});
ok($node->poll_query_until('lat1', q{SELECT count(*) = 0 FROM zim_pin_job WHERE state = 'pending'}),
	'the worker recorded an answer in Chinese');
is(lat1(q{SELECT conv_id || ' ' || sub_code || ' ' || sub_message FROM zim_pin_job_failure}),
	'grüppe 660800048 ???? é', '... as a failure row, with what LATIN1 cannot hold as "?"');
is(lat1(q{SELECT count(*) FROM zim_conv_pinned('lat_u', ARRAY['grüppe'], 2, false)}), '0',
	'the synchronous call works in the LATIN1 database too');

# --- 7. an ERROR while recording: poison jobs end, in the worker -------------
# (a trigger stands for anything that raises while a job is recorded)
my $count_sent = q{SET client_encoding = 'UTF8'; SELECT count(*) FROM jsonb_array_elements(double('State')->'Requests') r
	WHERE r->>'Action' = 'ConvPinned' AND r->>'User' = 'lat_u'};
my $sent_before = $node->safe_psql('postgres', $count_sent);
lat1(q{
	CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS
	$$ BEGIN IF NEW.sub_code IS NOT NULL THEN RAISE EXCEPTION 'poisoned row'; END IF; RETURN NEW; END $$;
	CREATE TRIGGER poison BEFORE INSERT ON zim_pin_job_failure FOR EACH ROW EXECUTE FUNCTION poison();
	SELECT zim_conv_pinned_enqueue('lat_u', ARRAY['nobödy'], 0, true);
});
my $t0 = time;
ok($node->poll_query_until('lat1', q{SELECT count(*) = 0 FROM zim_pin_job WHERE state = 'pending'}),
	sprintf('a job whose recording raises ends (%.1f s)', time - $t0));
is(lat1(q{SELECT state || ' ' || attempts || ' ' || last_message FROM zim_pin_job ORDER BY job_id DESC LIMIT 1}),
	'failed 3 P0001: poisoned row', '... failed after zim_pin.job_max_attempts (3), with the SQLSTATE and message');
is($node->safe_psql('postgres', $count_sent) - $sent_before, 3, '... and was sent 3 times, not without end');
ok(!$node->log_contains('terminated by signal'), 'no backend crashed');

# --- ... and in zim_pin_run_jobs ---------------------------------------------
$node->safe_psql('postgres', q{
	CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS
	$$ BEGIN IF NEW.sub_code IS NOT NULL THEN RAISE EXCEPTION 'poisoned row'; END IF; RETURN NEW; END $$;
	CREATE TRIGGER poison BEFORE INSERT ON zim_pin_job_failure FOR EACH ROW EXECUTE FUNCTION poison();
	SELECT zim_conv_pinned_enqueue('nobody2', ARRAY['x'], 0, true);
});
my $warnings = 0;
for (1 .. 30)
{
	my ($r, $o, $e) = $node->psql('postgres', q{SELECT zim_pin_run_jobs()});
	$warnings++ if $e =~ /WARNING:  sending queued jobs failed: poisoned row/;
	last if $node->safe_psql('postgres', q{SELECT count(*) FROM zim_pin_job WHERE state = 'pending'}) eq '0';
	sleep 1;
}
is($node->safe_psql('postgres', q{SELECT state || ' ' || attempts || ' ' || last_message FROM zim_pin_job}),
	'failed 3 P0001: poisoned row', 'zim_pin_run_jobs records the error on the job, which fails after 3 attempts');
is($warnings, 3, '... each attempt warning its caller, whose call goes on');

$node->stop;
done_testing();
