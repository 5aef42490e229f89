/*---
# The SQL version of rules/credential_stuffing.yaml: same id, version, thresholds and texts, so
# both give the same alert (and alert_id) for the same incident. See docs/SQL.md for where the
# two can differ.
id: credential_stuffing
version: 1
description: Many accounts tried once or twice from one address, many unknown (leaked list)
category: credential_stuffing
severity: high
cause_class: attack
attack_technique: [T1110.004]
# Per source address, a session lasts while failures come at most 15 minutes apart: whatever the
# compiled rule's sliding 15-minute window holds at a decision lies in one session.
window: { kind: session, gap: 15m }
key: [ip]
suppress: 1h
summary:
  en: "Credential stuffing from {ip}: {failures} failed sign-ins over {users} accounts ({unknown} unknown) within {window}."
  ja: "{ip} からのクレデンシャルスタッフィング: {window}以内に {users} アカウントに対して {failures} 件のサインイン失敗（うち存在しないユーザー {unknown} 件）。"
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
),
-- At every failure: what the sliding window [t - 15m, t] of its address holds.
d AS (
  SELECT e.ip, e.time, e.event_id,
         count(*) AS failures,
         count(DISTINCT w.account) AS users,
         sum(CASE WHEN w.reason = 'unknown_user' THEN 1 ELSE 0 END) AS unknown,
         min(w.time) AS first_seen,
         array_agg(w.event_id ORDER BY w.time, w.event_id) AS evidence
  FROM f e
  JOIN f w ON w.ip = e.ip AND w.window_start = e.window_start
          AND w.time BETWEEN e.time - duration_ms('15m') AND e.time
  GROUP BY e.ip, e.window_start, e.time, e.event_id
)
-- Every failure at which the rule's condition holds; the earliest of an incident is its alert.
-- The compiled engine keeps only threshold + 1 entries of a count that is compared with a
-- threshold alone (`unknown >= 5`), so its alert shows at most 6 for `unknown`; shown the same.
SELECT ip, first_seen, time AS last_seen, event_id, failures, users, least(unknown, 6) AS unknown,
       evidence
FROM d
WHERE failures >= 25 AND users >= 15 AND failures <= 2 * users AND unknown >= 5
