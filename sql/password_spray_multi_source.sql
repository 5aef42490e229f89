/*---
# The SQL version of rules/password_spray_multi_source.yaml (same id, version, thresholds and
# texts). Unlike the compiled rule it has no `unless` veto (tries from addresses that
# password_spray, password_spray_one_try or credential_stuffing already reported still count):
# see docs/SQL.md. Version 3 as the compiled rule's (its veto changed; the alert id carries it).
id: password_spray_multi_source
version: 3
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
),
d AS (
  SELECT e.tenant, e.time, e.event_id,
         count(*) AS tries,
         count(DISTINCT w.account) AS users,
         count(DISTINCT w.ip) AS ips,
         min(w.time) AS first_seen,
         array_agg(w.event_id ORDER BY w.time, w.event_id) AS evidence
  FROM f e
  JOIN f w ON w.tenant = e.tenant AND w.window_start = e.window_start
          AND w.time BETWEEN e.time - duration_ms('15m') AND e.time
  GROUP BY e.tenant, e.window_start, e.time, e.event_id
)
SELECT tenant, first_seen, time AS last_seen, event_id, tries, users, ips, evidence
FROM d
WHERE ips >= 5 AND users >= 8 AND tries >= 25
