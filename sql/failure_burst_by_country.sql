/*---
# An analyst's detection with no compiled twin: a tumbling hourly count of failed sign-ins per
# source country, far above what a country normally produces in an hour.
id: failure_burst_by_country
version: 1
description: Many failed sign-ins from one country within an hour
category: credential_stuffing
severity: medium
cause_class: attack
attack_technique: [T1110]
window: { kind: tumbling, size: 1h }
key: [country]
suppress: 1h
summary:
  en: "{failures} failed sign-ins from country {country} over {accounts} accounts and {addresses} addresses within {window}."
  ja: "{window}以内に国 {country} から {accounts} アカウント・{addresses} アドレスに対して {failures} 件のサインイン失敗。"
steps:
  en:
    - "Check whether the organization has users in this country; if not, consider a conditional-access block."
    - "Look for password_spray and credential_stuffing alerts from the same addresses."
  ja:
    - "この国にユーザーがいるか確認し、いなければ条件付きアクセスでのブロックを検討してください。"
    - "同じアドレスからの password_spray や credential_stuffing のアラートを確認してください。"
---*/
SELECT src.geo.country AS country,
       min(time) AS first_seen,
       max(time) AS last_seen,
       last_value(event_id ORDER BY time) AS event_id,
       count(*) AS failures,
       count(DISTINCT coalesce("user".name, "user".id)) AS accounts,
       count(DISTINCT src.ip) AS addresses
FROM events
WHERE activity = 'logon' AND outcome = 'failure' AND src.geo.country IS NOT NULL
GROUP BY src.geo.country, window_start
HAVING count(*) >= 200 AND count(DISTINCT src.ip) >= 20
