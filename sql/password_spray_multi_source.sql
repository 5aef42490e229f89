/*---
# The SQL version of rules/password_spray_multi_source.yaml (same id, version, thresholds and
# texts). Unlike the compiled rule it has no `unless` veto (tries from addresses that
# password_spray, password_spray_one_try or credential_stuffing already reported still count):
# see docs/SQL.md. Version 4 as the compiled rule's (v3: its veto changed; v4: failures from
# addresses tagged corporate_egress, the operator's own NAT, are left out; the alert id carries
# the version).
id: password_spray_multi_source
version: 4
description: Password spraying spread over several source addresses (tenant-wide)
category: password_spray
severity: high
cause_class: attack
attack_technique: [T1110.003]
window: { kind: session, gap: 15m }
key: [tenant]
suppress: 1h
summary:
  en: "Distributed password spraying against tenant {tenant}: {tries} wrong passwords over {users} accounts from {ips} addresses within {window}."
  ja: "テナント {tenant} への分散型パスワードスプレー: {window}以内に {ips} 個のアドレスから {users} アカウントへ誤ったパスワード {tries} 件。"
steps:
  en:
    - "List the source addresses in the evidence and block those that are not corporate egress."
    - "Check the targeted accounts for successful sign-ins from those addresses."
    - "Enable smart lockout / breached-password protection tenant-wide."
  ja:
    - "証跡の送信元アドレスを確認し、社内の出口アドレス以外をブロックしてください。"
    - "対象アカウントにそれらのアドレスからの成功したサインインがないか確認してください。"
    - "テナント全体でスマートロックアウト／漏えいパスワード保護を有効にしてください。"
---*/
WITH f AS (
  SELECT tenant, src.ip AS ip,
         -- An account is its login (else the provider's id), compared without ASCII case as the
         -- compiled rules key users (`Ken@` and `ken@` are one account); `translate` folds ASCII
         -- letters only, as they do. The tenant is this detection's key.
         translate(coalesce(nullif("user".name, ''), nullif("user".id, '')),
                   'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz') AS account,
         time, event_id, window_start
  FROM events
  WHERE activity = 'logon' AND outcome = 'failure' AND reason = 'invalid_credentials'
    AND tenant IS NOT NULL
    -- The compiled rule's `src.tags: {not: [corporate_egress]}`: staff behind the operator's own
    -- NAT are no spray source (an event without tags has an empty or null list).
    AND NOT coalesce(array_has(src.tags, 'corporate_egress'), false)
),
-- At every failure: what the compiled rule's sliding window [t - 15m, t] of its tenant holds,
-- as a RANGE frame over the session's rows in time order (900000 ms = 15 minutes, and every row
-- of its own millisecond): linear in the session's rows (see credential_stuffing.sql).
d AS (
  SELECT tenant, window_start, time, event_id,
         count(*) OVER w AS tries,
         count(DISTINCT account) OVER w AS users,
         count(DISTINCT ip) OVER w AS ips,
         min(time) OVER w AS first_seen
  FROM f
  WINDOW w AS (PARTITION BY tenant, window_start ORDER BY time
               RANGE BETWEEN 900000 PRECEDING AND CURRENT ROW)
),
-- The earliest failure of each session at which the condition holds is the alert; rows before
-- window_start are context carried from an earlier part of a long session, decided already.
hit AS (
  SELECT tenant, window_start, time, event_id, tries, users, ips, first_seen,
         row_number() OVER (PARTITION BY tenant, window_start ORDER BY time, event_id) AS nth
  FROM d
  WHERE ips >= 5 AND users >= 8 AND tries >= 25 AND time >= window_start
)
SELECT h.tenant, h.window_start, h.first_seen, h.time AS last_seen, h.event_id, h.tries,
       h.users, h.ips,
       array_agg(w.event_id ORDER BY w.time, w.event_id) AS evidence
FROM hit h
JOIN f w ON w.tenant = h.tenant AND w.window_start = h.window_start
        AND w.time BETWEEN h.time - duration_ms('15m') AND h.time
WHERE h.nth = 1
GROUP BY h.tenant, h.window_start, h.first_seen, h.time, h.event_id, h.tries, h.users, h.ips
