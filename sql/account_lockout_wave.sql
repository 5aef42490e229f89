/*---
# The SQL version of rules/account_lockout_wave.yaml (same id, version, threshold and texts).
id: account_lockout_wave
version: 1
description: A wave of account lockouts across the tenant
category: account_lockout
severity: high
cause_class: attack
attack_technique: [T1110]
window: { kind: session, gap: 30m }
key: [tenant]
suppress: 2h
summary:
  en: "Lockout wave in tenant {tenant}: {users} accounts locked within {window}."
  ja: "テナント {tenant} でロックアウトが多発: {window}以内に {users} アカウントがロックされました。"
steps:
  en:
    - "Find the common source of the failures (addresses, user agent) in the locked accounts' sign-ins and block it."
    - "Check for password_spray and credential_stuffing alerts in the same window."
    - "Unlock accounts in bulk only after the source is blocked, or they will lock again."
  ja:
    - "ロックされたアカウントのサインインから共通の失敗元（アドレス、ユーザーエージェント）を特定してブロックしてください。"
    - "同じ時間帯の password_spray や credential_stuffing のアラートを確認してください。"
    - "失敗元をブロックしてから一括でロックを解除してください。先に解除すると再びロックされます。"
---*/
WITH f AS (
  SELECT tenant,
         -- An account is its login (else the provider's id), compared without ASCII case as the
         -- compiled rules key users (`Ken@` and `ken@` are one account); `translate` folds ASCII
         -- letters only, as they do. The tenant is this detection's key.
         translate(coalesce(nullif("user".name, ''), nullif("user".id, '')),
                   'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz') AS account,
         time, event_id, window_start
  FROM events
  WHERE activity = 'account_lock' AND tenant IS NOT NULL
),
-- At every lock: how many accounts the compiled rule's sliding window [t - 30m, t] of its tenant
-- holds, as a RANGE frame over the session's rows in time order (1800000 ms = 30 minutes, and
-- every lock of its own millisecond): linear in the session's rows, where a self-join paired
-- every lock with every other.
d AS (
  SELECT tenant, window_start, time, event_id,
         count(DISTINCT account) OVER (PARTITION BY tenant, window_start ORDER BY time
                                       RANGE BETWEEN 1800000 PRECEDING AND CURRENT ROW) AS users
  FROM f
),
-- The earliest lock of each session at which the wave is big enough is the alert; rows before
-- window_start are context carried from an earlier part of a long session, decided already.
hit AS (
  SELECT tenant, window_start, time, event_id,
         row_number() OVER (PARTITION BY tenant, window_start ORDER BY time, event_id) AS nth
  FROM d
  WHERE users >= 25 AND time >= window_start
),
-- For the deciding lock alone: each account's latest lock within its window (a wave counts
-- accounts, and an account locked twice counts once, at its latest lock).
p AS (
  SELECT h.tenant, h.window_start, h.time, h.event_id, w.account,
         max(w.time) AS latest,
         last_value(w.event_id ORDER BY w.time, w.event_id) AS latest_id
  FROM hit h
  JOIN f w ON w.tenant = h.tenant AND w.window_start = h.window_start
          AND w.time BETWEEN h.time - duration_ms('30m') AND h.time
  WHERE h.nth = 1 AND w.account IS NOT NULL
  GROUP BY h.tenant, h.window_start, h.time, h.event_id, w.account
)
SELECT tenant, window_start, min(latest) AS first_seen, time AS last_seen, event_id,
       count(*) AS users,
       array_agg(latest_id ORDER BY latest, latest_id) AS evidence
FROM p
GROUP BY tenant, window_start, time, event_id
