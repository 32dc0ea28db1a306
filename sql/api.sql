--
-- api: zim_api signs any Action and returns the answer whatever its Code
--
SELECT double('Reset')->'Code' AS reset;

-- UserRegister, partly successful
SELECT r->'Code' AS code, r->'ErrorList' AS error_list, r ? 'RequestId' AS has_request_id
FROM zim_api('UserRegister', '{"UserInfo": [{"UserId": "ivy", "UserName": "Ivy", "UserAvatar": ""},
                                            {"UserId": "jay", "UserName": "Jay", "UserAvatar": ""}]}') r;
SELECT r->'Code' AS code, r->'ErrorList' AS error_list
FROM zim_api('UserRegister', '{"UserInfo": [{"UserId": "ivy", "UserName": "Ivy", "UserAvatar": ""},
                                            {"UserId": "kim", "UserName": "Kim", "UserAvatar": ""}]}') r;

-- a non-zero Code is returned, not raised
SELECT r->'Code' AS code, r->'ErrorList' AS error_list
FROM zim_api('UserRegister', '{"UserInfo": [{"UserId": "ivy", "UserName": "Ivy", "UserAvatar": ""}]}') r;
SELECT r->'Code' AS code FROM zim_api('NoSuchAction', '{}') r;
SELECT r->'Code' AS code FROM zim_api('ConvPinned', '{"FromUserId": "nobody"}') r;

-- ConvPinned through zim_api, then QueryConversationList
SELECT r->'Code' AS code, r->'ErrorList' AS error_list
FROM zim_api('ConvPinned', '{"FromUserId": "ivy", "PinnedType": 1,
    "ConvList": [{"ConvId": "jay", "ConvType": 0}, {"ConvId": "zed", "ConvType": 0}]}') r;
SELECT r->'Code' AS code, r->'TotalCount' AS total,
       (SELECT jsonb_agg(c->'ConvId' ORDER BY c->>'ConvId') FROM jsonb_array_elements(r->'List') c) AS convs
FROM zim_api('QueryConversationList', '{"FromUserId": "ivy", "Limit": 10, "Next": 0}') r;
SELECT * FROM double_pins('ivy');

-- non-ASCII text travels as UTF-8 both ways
SELECT r->'Code' AS code
FROM zim_api('UserRegister', '{"UserInfo": [{"UserId": "lee", "UserName": "李 ünïcödé", "UserAvatar": ""}]}') r;

-- retries: a rate-limit Code is retried (the request was not processed) ...
SELECT double('Fault', '{"Fault": "code", "Code": 660700001, "Count": 1, "Action": "UserRegister"}')->'Code' AS fault;
SELECT r->'Code' AS code, r->'ErrorList' AS error_list
FROM zim_api('UserRegister', '{"UserInfo": [{"UserId": "max", "UserName": "Max", "UserAvatar": ""}]}') r;
-- ... and returned once the retries are spent
SET zim_pin.max_retries = 1;
SELECT double('Fault', '{"Fault": "code", "Code": 7, "Count": 2, "Action": "UserRegister"}')->'Code' AS fault;
SELECT r->'Code' AS code
FROM zim_api('UserRegister', '{"UserInfo": [{"UserId": "ned", "UserName": "Ned", "UserAvatar": ""}]}') r;
RESET zim_pin.max_retries;
-- ... but an HTTP 500 is not: an arbitrary Action may have been processed
SELECT double('Fault', '{"Fault": "http500", "Count": 1, "Action": "UserRegister"}')->'Code' AS fault;
SELECT * FROM zim_try($$SELECT zim_api('UserRegister', '{"UserInfo": [{"UserId": "oli", "UserName": "Oli", "UserAvatar": ""}]}')$$);
-- nor a lost connection
SELECT double('Fault', '{"Fault": "reset", "Count": 1, "Action": "UserRegister"}')->'Code' AS fault;
SELECT * FROM zim_try($$SELECT zim_api('UserRegister', '{"UserInfo": [{"UserId": "oli", "UserName": "Oli", "UserAvatar": ""}]}')$$);
SELECT r->>'Action' AS action, r->'Fault' AS fault, r->'Code' AS code
FROM jsonb_array_elements(double('State')->'Requests') r
WHERE r->>'Action' = 'UserRegister';
