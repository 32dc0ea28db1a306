# The queue of every Action in a LATIN1 database (issue 17): conversation
# ids beyond ASCII, stored as LATIN1 bytes ("caf\xe9"), go out in UTF-8
# ("caf\xc3\xa9") for each Action, through the worker: a pin, a mute, a
# mark, a clear and a delete, each done with its effect on the double; the
# ids of ZIM's failure entries (in \u escapes or raw UTF-8) find their job's
# conversation; and an id that is 17 bytes in LATIN1 but 34 in UTF-8 is
# refused by every enqueue function with 22023, before anything is stored.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use Test::More;
use ZimTest;

my $node = zim_node('lat1queue', conf => "zim_pin.worker_database = 'lat1q'\n");
$node->safe_psql('postgres',
	q{CREATE DATABASE lat1q ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0});
$node->safe_psql('lat1q', q{CREATE EXTENSION zim_pin});
is($node->safe_psql('lat1q', q{SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()}),
	'LATIN1', 'the database is LATIN1');

# the double is driven from the UTF8 database "postgres"; psql talks UTF-8
# to both, and lat1q stores LATIN1
sub u8 { my ($sql) = @_; return $node->safe_psql('postgres', "SET client_encoding = 'UTF8'; $sql"); }
sub lat1 { my ($sql) = @_; return $node->safe_psql('lat1q', "SET client_encoding = 'UTF8'; $sql"); }
sub state_of { my ($user, $expr) = @_; return u8(qq{SELECT $expr FROM double('State', '{"UserId": "$user"}') s}); }
sub wait_done
{
	ok($node->poll_query_until('lat1q', q{SELECT count(*) = 0 FROM zim_pin_job WHERE state = 'pending'}), $_[0]);
}

u8(q{SELECT double('Reset'); SELECT register('l_a', 'l_b')});
u8(q{SELECT double('Seed', '{"Groups": {"café": ["l_a"], "grüppe": ["l_b"], "ñandú": ["l_a"]},
	"Conversations": [{"UserId": "l_a", "ConvId": "naïve", "ConvType": 2, "Unread": 3},
		{"UserId": "l_a", "ConvId": "déjà", "ConvType": 2, "Unread": 1},
		{"UserId": "l_a", "ConvId": "über", "ConvType": 2, "Unread": 2}]}')});

# --- one job of each Action, ids beyond ASCII ------------------------------------
# 'caf' || E'\xe9' is how LATIN1 spells café: the enqueue functions get it
# from the database as it is stored
lat1(q{
	SELECT zim_conv_pinned_enqueue('l_a', ARRAY['caf' || convert_from('\xe9'::bytea, 'LATIN1')], 2, true);
	SELECT zim_silence_conv_notification_enqueue('l_a', ARRAY['café', 'grüppe'], 2, true);
	SELECT zim_set_conv_mark_enqueue('l_a', ARRAY['café', 'ñandú'], ARRAY[2, 2], 7, true);
	SELECT zim_clear_conversation_unread_enqueue('l_a', ARRAY['naïve', 'ñoño'], 2);
	SELECT zim_delete_conv_enqueue('l_a', ARRAY['déjà'], ARRAY[2]);
});
is(lat1(q{SELECT encode(convert_to(conv_ids[1], 'LATIN1'), 'hex') FROM zim_pin_job ORDER BY job_id LIMIT 1}),
	'636166e9', 'the job stores café as LATIN1 bytes');
wait_done('the worker sent a job of each Action with ids beyond ASCII');
is(lat1(q{SELECT string_agg(action || ':' || state || ':' || attempts, ',' ORDER BY job_id) FROM zim_pin_job}),
	'ConvPinned:done:1,SilenceConvNotification:done:1,SetConvMark:done:1,ClearConversationUnread:done:1,DeleteConv:done:1',
	'... each done at its first attempt');
is(state_of('l_a', q{(SELECT string_agg(p->>'ConvId' || ' ' || encode(convert_to(p->>'ConvId', 'UTF8'), 'hex'), ',') FROM jsonb_array_elements(s->'Pins') p)}),
	'café 636166c3a9', 'ConvPinned: the double has café pinned, in UTF-8');
is(state_of('l_a', q{(SELECT string_agg(m->>'ConvId' || ' ' || encode(convert_to(m->>'ConvId', 'UTF8'), 'hex'), ',') FROM jsonb_array_elements(s->'Mutes') m)}),
	'café 636166c3a9', 'SilenceConvNotification: café muted, in UTF-8');
is(state_of('l_a', q{(SELECT string_agg(m->>'ConvId' || ' ' || (m->'Marks')::text, ',' ORDER BY m->>'ConvId') FROM jsonb_array_elements(s->'Marks') m)}),
	'café [7],ñandú [7]', 'SetConvMark: café and ñandú marked 7');
is(state_of('l_a', q{(SELECT string_agg(c->>'ConvId' || ' ' || (c->>'Unread'), ',' ORDER BY c->>'ConvId') FROM jsonb_array_elements(s->'Conversations') c
	WHERE c->>'ConvId' IN ('naïve', 'déjà', 'über'))}),
	'naïve 0,über 2', 'ClearConversationUnread: naïve cleared (über not); DeleteConv: déjà deleted');
# failures named by ZIM (grüppe: not a member, in a \u escape) and by the
# request (ñoño: no such conversation) come back in LATIN1
is(lat1(q{SELECT string_agg(j.action || ' ' || f.conv_id || ' ' || f.conv_type || ' ' || f.sub_code, ', ' ORDER BY f.job_id)
	FROM zim_pin_job_failure f JOIN zim_pin_job j USING (job_id)}),
	'SilenceConvNotification grüppe 2 660600024, ClearConversationUnread ñoño 2 660800002',
	'the failure rows name grüppe and ñoño, with the type asked for');
is(lat1(q{SELECT string_agg(encode(convert_to(conv_id, 'LATIN1'), 'hex'), ',' ORDER BY job_id) FROM zim_pin_job_failure}),
	'6772fc707065,f16ff16f',
	'... stored as LATIN1 bytes');

# --- failure entries in raw UTF-8 --------------------------------------------------
u8(q{SELECT double('Config', '{"AsciiJson": false}')});
my $last = lat1(q{SELECT max(job_id) FROM zim_pin_job});
lat1(q{
	SELECT zim_silence_conv_notification_enqueue('l_a', ARRAY['grüppe', 'ñandú'], ARRAY[2, 2], true);
	SELECT zim_set_conv_mark_enqueue('l_a', ARRAY['über'], 2, 30, true);
	SELECT zim_clear_conversation_unread_enqueue('l_a', ARRAY['über'], ARRAY[2]);
	SELECT zim_delete_conv_enqueue('l_a', ARRAY['naïve'], 2);
	SELECT zim_silence_conv_notification_enqueue('l_a', ARRAY['café'], 2, false);
});
wait_done('with answers in raw UTF-8, the worker sent a job of each Action again');
is(lat1(qq{SELECT string_agg(action || ':' || state, ',' ORDER BY job_id) FROM zim_pin_job WHERE job_id > $last}),
	'SilenceConvNotification:done,SetConvMark:done,ClearConversationUnread:done,DeleteConv:done,SilenceConvNotification:done',
	'... each done');
is(lat1(qq{SELECT string_agg(f.conv_id || ' ' || f.sub_code, ', ') FROM zim_pin_job_failure f WHERE job_id > $last}),
	'grüppe 660600024', '... the raw UTF-8 grüppe is the one failure row');
is(state_of('l_a', q{(SELECT string_agg(m->>'ConvId', ',' ORDER BY m->>'ConvId') FROM jsonb_array_elements(s->'Mutes') m)}),
	'ñandú', 'the double has ñandú muted and café unmuted');
is(state_of('l_a', q{(SELECT string_agg(c->>'ConvId' || ' ' || (c->>'Unread'), ',' ORDER BY c->>'ConvId') FROM jsonb_array_elements(s->'Conversations') c
	WHERE c->>'ConvId' IN ('naïve', 'über'))}),
	'über 0', '... über marked 30 and cleared, naïve deleted');
is(state_of('l_a', q{(SELECT m->'Marks' FROM jsonb_array_elements(s->'Marks') m WHERE m->>'ConvId' = 'über')}),
	'[30]', '... über carries mark 30');
u8(q{SELECT double('Config', '{"AsciiJson": true}')});

# a FailList naming café in raw UTF-8, its message in a script LATIN1
# cannot hold: the failure row is café's, the message with "?"
u8(q{SELECT double('Fault', '{"Fault": "body", "Action": "SetConvMark", "Body": "{\"Code\": 0, \"Message\": \"success\", \"RequestId\": \"r\", \"FailList\": [{\"UserId\": \"l_a\", \"SubCode\": 0, \"FailList\": [{\"ConvId\": \"café\", \"ConvType\": 2, \"Code\": 1, \"Message\": \"标记 é\"}]}]}"}')});
$last = lat1(q{SELECT max(job_id) FROM zim_pin_job});
lat1(q{SELECT zim_set_conv_mark_enqueue('l_a', ARRAY['café', 'über'], 2, 12, true)});
wait_done('a mark job with a failure entry in raw UTF-8 finished');
is(lat1(qq{SELECT j.state || ' ' || f.conv_id || ' ' || f.conv_type || ' ' || f.sub_code || ' ' || f.sub_message
	FROM zim_pin_job j JOIN zim_pin_job_failure f USING (job_id) WHERE job_id > $last}),
	'done café 2 1 ?? é', '... done, with café\'s failure row, and what LATIN1 cannot hold as "?"');

# --- measured in UTF-8: 17 "é" are 17 bytes here, 34 on the wire ---------------------
my $long = q{repeat(convert_from('\xe9'::bytea, 'LATIN1'), 17)};
my $longest = q{repeat(convert_from('\xe9'::bytea, 'LATIN1'), 16)};
my %enqueue = (
	ConvPinned => 'zim_conv_pinned_enqueue(%s, %s, 2, true)',
	SilenceConvNotification => 'zim_silence_conv_notification_enqueue(%s, %s, 2, true)',
	SetConvMark => 'zim_set_conv_mark_enqueue(%s, %s, ARRAY[2], 1, true)',
	ClearConversationUnread => 'zim_clear_conversation_unread_enqueue(%s, %s, 2)',
	DeleteConv => 'zim_delete_conv_enqueue(%s, %s, ARRAY[2])',
);
my $jobs = lat1(q{SELECT count(*) FROM zim_pin_job});
for my $action (sort keys %enqueue)
{
	my $call = sprintf($enqueue{$action}, q{'l_a'}, "ARRAY[$long]");
	my ($ret, $out, $err) = $node->psql('lat1q', "SELECT $call", extra_params => ['-v', 'VERBOSITY=verbose']);
	like($err, qr/ERROR:  22023: conversation id must not be longer than 32 bytes in UTF-8/,
		"$action: enqueue refuses an id of 17 bytes in LATIN1 that is 34 in UTF-8 (22023)");
	$call = sprintf($enqueue{$action}, q{'l_a'}, "ARRAY[$longest]");
	is($node->safe_psql('lat1q', "BEGIN; SELECT $call > 0; ROLLBACK"), 't',
		"$action: ... and takes one of 32 bytes in UTF-8");
}
is(lat1(q{SELECT count(*) FROM zim_pin_job}), $jobs, 'nothing was stored');

# the queue goes on after the refusals
lat1(q{SELECT zim_delete_conv_enqueue('l_a', ARRAY['ñandú'], 2)});
wait_done('a later job is sent');
is(lat1(q{SELECT action || ' ' || state FROM zim_pin_job ORDER BY job_id DESC LIMIT 1}), 'DeleteConv done', '... and done');
ok(!$node->log_contains('terminated by signal'), 'no backend crashed');

$node->stop;
done_testing();
