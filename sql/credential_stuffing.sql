/*---
# The SQL version of rules/credential_stuffing.yaml: same id, version, thresholds and texts, so
# both give the same alert (and alert_id) for the same incident. See docs/SQL.md for where the
# two can differ.
# v3: failures from an address tagged corporate_egress (the operator's own office NAT, from
# enrich.cidr_lists) are left out, as in the compiled rule.
id: credential_stuffing
version: 3
description: Many accounts tried once or twice from one address, many unknown (leaked list)
category: credential_stuffing
severity: high
cause_class: attack
attack_technique: [T1110.004]
# Per source address, a session lasts while failures come at most 15 minutes apart: whatever the
# compiled rule's sliding 15-minute window holds at a decision lies in one session (and a long
# session, decided in parts, carries the 15 minutes before each part: docs/SQL.md).
window: { kind: session, gap: 15m }
key: [ip]
suppress: 1h
summary:
  en: "Credential stuffing from {ip}: {failures} failed sign-ins over {users} accounts ({unknown_names} unknown) within {window}."
  ja: "{ip} からのクレデンシャルスタッフィング: {window}以内に {users} アカウントに対して {failures} 件のサインイン失敗（うち存在しないユーザー {unknown_names} 件）。"
steps:
  en:
    - "Block the source address (or its range) at the identity provider or the edge."
    - "Check whether any account tried from this address signed in successfully afterwards (see credential_compromise)."
    - "Force a password reset for existing accounts on the list and enable breached-password detection."
  ja:
    - "送信元アドレス（または範囲）を ID プロバイダーまたはエッジでブロックしてください。"
    - "このアドレスから試行されたアカウントがその後サインインに成功していないか確認してください（credential_compromise を参照）。"
    - "リストに含まれる実在アカウントのパスワードリセットを強制し、漏えいパスワード検出を有効にしてください。"
---*/
WITH f AS (
  -- An account is its login (else the provider's id) within its tenant, compared without ASCII
  -- case, as the compiled rules key users: `jsmith` of two tenants tried from one address is two
  -- accounts, `Ken@` and `ken@` of one tenant one. One string, the tenant ('' when the provider
  -- names none) prefixed by its length so that no other pair reads the same, keeps
  -- count(DISTINCT) on strings (crates/query/src/count_distinct.rs); `||` keeps an event without
  -- a user name or id NULL, uncounted, as the compiled rule leaves it out. `translate` folds
  -- ASCII letters only, as the compiled key does (`lower` would fold other letters too).
  SELECT src.ip AS ip,
         CAST(character_length(coalesce(tenant, '')) AS VARCHAR) || ':' || coalesce(tenant, '')
           || translate(coalesce(nullif("user".name, ''), nullif("user".id, '')),
                        'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz') AS account,
         CAST(reason AS VARCHAR) AS reason,
         time, event_id, window_start
  FROM events
  WHERE activity = 'logon' AND outcome = 'failure'
    AND reason IN ('invalid_credentials', 'unknown_user')
    AND src.ip IS NOT NULL
    -- The compiled rule's `src.tags: {not: [corporate_egress]}`: staff behind the operator's own
    -- NAT are no stuffing source (an event without tags has an empty or null list).
    AND NOT coalesce(array_has(src.tags, 'corporate_egress'), false)
),
-- At every failure: what the compiled rule's sliding window [t - 15m, t] of its address holds.
-- A RANGE frame over the session's rows in time order is exactly that window (the rows up to
-- 15 minutes = 900000 ms before, and every row of its own millisecond), and each aggregate
-- slides along it, adding the rows that enter and retracting those that leave: linear in the
-- session's rows, where a self-join paired every row with every other.
d AS (
  SELECT ip, window_start, time, event_id,
         count(*) OVER w AS failures,
         count(DISTINCT account) OVER w AS users,
         sum(CASE WHEN reason = 'unknown_user' THEN 1 ELSE 0 END) OVER w AS unknown,
         min(time) OVER w AS first_seen
  FROM f
  WINDOW w AS (PARTITION BY ip, window_start ORDER BY time
               RANGE BETWEEN 900000 PRECEDING AND CURRENT ROW)
),
-- The failures at which the rule's condition holds, numbered in time order per session: the
-- earliest is the alert (the engine absorbs the later ones into its incident, so they are not
-- returned). Rows before window_start are earlier rows of a long session, carried as context
-- for this part and decided already.
hit AS (
  SELECT ip, window_start, time, event_id, failures, users, unknown, first_seen,
         row_number() OVER (PARTITION BY ip, window_start ORDER BY time, event_id) AS nth
  FROM d
  WHERE failures >= 25 AND users >= 15 AND failures <= 2 * users AND unknown >= 5
    AND time >= window_start
)
-- The compiled engine keeps only threshold + 1 entries of a count that is compared with a
-- threshold alone (`unknown >= 5`), so its alert shows at most 6 for `unknown`; shown the same.
-- `unknown_names`, the count the summary shows, is the window's whole count in both.
-- The evidence, the window's failures in order, is gathered for the deciding failure alone.
SELECT h.ip, h.window_start, h.first_seen, h.time AS last_seen, h.event_id, h.failures, h.users,
       least(h.unknown, 6) AS unknown, h.unknown AS unknown_names,
       array_agg(w.event_id ORDER BY w.time, w.event_id) AS evidence
FROM hit h
JOIN f w ON w.ip = h.ip AND w.window_start = h.window_start
        AND w.time BETWEEN h.time - duration_ms('15m') AND h.time
WHERE h.nth = 1
GROUP BY h.ip, h.window_start, h.first_seen, h.time, h.event_id, h.failures, h.users, h.unknown
