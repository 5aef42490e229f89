/*---
# An analyst's detection with no compiled twin: a tumbling hourly count of failed sign-ins per
# tenant and source country, far above what a country normally produces in an hour. Keyed by
# the tenant too: two tenants' failures from one country are two organizations' business, not
# one burst, and the alert names whose users it is about. Version 2: keyed by country alone
# before.
id: failure_burst_by_country
version: 2
description: Many failed sign-ins from one country within an hour
category: credential_stuffing
severity: medium
cause_class: attack
attack_technique: [T1110]
window: { kind: tumbling, size: 1h }
key: [tenant, country]
suppress: 1h
summary:
  en: "{failures} failed sign-ins to tenant {tenant} from country {country} over {accounts} accounts and {addresses} addresses within {window}."
  ja: "{window}以内にテナント {tenant} へ国 {country} から {accounts} アカウント・{addresses} アドレスに対して {failures} 件のサインイン失敗。"
steps:
  en:
    - "Check whether the organization has users in this country; if not, consider a conditional-access block."
    - "Look for password_spray and credential_stuffing alerts from the same addresses."
  ja:
    - "この国にユーザーがいるか確認し、いなければ条件付きアクセスでのブロックを検討してください。"
    - "同じアドレスからの password_spray や credential_stuffing のアラートを確認してください。"
---*/
-- An event without a tenant names no entity of this key (the compiled rules skip such events
-- too); the empty text is no tenant either.
SELECT tenant, src.geo.country AS country,
       min(time) AS first_seen,
       max(time) AS last_seen,
       last_value(event_id ORDER BY time) AS event_id,
       count(*) AS failures,
       count(DISTINCT coalesce("user".name, "user".id)) AS accounts,
       count(DISTINCT src.ip) AS addresses
FROM events
WHERE activity = 'logon' AND outcome = 'failure' AND src.geo.country IS NOT NULL
  AND tenant IS NOT NULL AND tenant <> ''
GROUP BY tenant, src.geo.country, window_start
HAVING count(*) >= 200 AND count(DISTINCT src.ip) >= 20
