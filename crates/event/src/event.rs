//! The normalized authentication event (`schemas/auth_event.schema.json`).

use crate::{Activity, DeviceType, Factor, Outcome, Reason, RiskLevel, Text};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// One authentication event from any provider, in authwatch's own schema.
///
/// Aligned with OCSF Authentication (class 3002): `time` is the event's own time in UTC
/// milliseconds and drives every window; `ingest_time` is when authwatch read it. Fields a
/// provider does not give stay empty and are left out of the JSON form.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthEvent {
    /// Event time: milliseconds since the Unix epoch, UTC.
    pub time: i64,
    /// When authwatch read the event: milliseconds since the Unix epoch, UTC.
    #[serde(default, skip_serializing_if = "is_default")]
    pub ingest_time: i64,
    /// The identity provider (`okta`, `entra`, `duo`, `auth0`, `keycloak`, `google`, …).
    pub provider: Text,
    /// The provider tenant / org / realm the event belongs to.
    #[serde(default, skip_serializing_if = "is_default")]
    pub tenant: Text,
    /// The provider's own event id (evidence and deduplication).
    pub event_id: Text,
    /// The provider's own event type or code, kept for evidence.
    #[serde(default, skip_serializing_if = "is_default")]
    pub provider_event_type: Text,
    /// The account.
    #[serde(default, skip_serializing_if = "is_default")]
    pub user: User,
    /// What happened.
    pub activity: Activity,
    /// The factor involved.
    #[serde(default, skip_serializing_if = "is_default")]
    pub factor: Factor,
    /// The result.
    pub outcome: Outcome,
    /// Why it did not succeed, in the closed vocabulary.
    #[serde(default, skip_serializing_if = "is_default")]
    pub reason: Reason,
    /// The provider's raw result / error code behind `reason`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub reason_raw: Text,
    /// The source of the request and what enrichment learned of it.
    #[serde(default, skip_serializing_if = "is_default")]
    pub src: Src,
    /// The client device.
    #[serde(default, skip_serializing_if = "is_default")]
    pub device: Device,
    /// Session or transaction id.
    #[serde(default, skip_serializing_if = "is_default")]
    pub session_id: Text,
    /// The target application.
    #[serde(default, skip_serializing_if = "is_default")]
    pub app: Text,
    /// The provider's own risk verdict.
    #[serde(default, skip_serializing_if = "is_default")]
    pub provider_risk: RiskLevel,
    /// What the user's own history says about this event (filled by the profile enricher).
    #[serde(default, skip_serializing_if = "is_default")]
    pub context: UserContext,
}

/// What the user's own sign-in history says about an event, computed in stream order by the
/// per-user profile store. Detections such as impossible travel and new device read it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserContext {
    /// The user had a profile before this event.
    #[serde(default, skip_serializing_if = "is_default")]
    pub known_user: bool,
    /// The profile is younger than the learning period: "new" facts are not yet meaningful.
    #[serde(default, skip_serializing_if = "is_default")]
    pub learning: bool,
    /// The device fingerprint was never seen for this user.
    #[serde(default, skip_serializing_if = "is_default")]
    pub new_device: bool,
    /// The country was never seen for this user.
    #[serde(default, skip_serializing_if = "is_default")]
    pub new_country: bool,
    /// The autonomous system was never seen for this user.
    #[serde(default, skip_serializing_if = "is_default")]
    pub new_asn: bool,
    /// The local hour is outside the user's usual hours.
    #[serde(default, skip_serializing_if = "is_default")]
    pub unusual_hour: bool,
    /// The user's previous successful sign-in, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousSignIn>,
    /// Great-circle distance from the previous successful sign-in, in km.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distance_km: Option<f64>,
    /// Implied travel speed from the previous successful sign-in, in km/h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_kmh: Option<f64>,
}

/// Where and when a user last signed in successfully.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviousSignIn {
    /// Event time (ms).
    pub time: i64,
    /// Source address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// Country code.
    #[serde(default, skip_serializing_if = "is_default")]
    pub country: Text,
    /// Latitude.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    /// Longitude.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
}

impl AuthEvent {
    /// An event with every field set, used to trace the Arrow schema and in tests.
    pub fn sample_full() -> AuthEvent {
        AuthEvent {
            time: 1_767_603_600_000,
            ingest_time: 1_767_603_600_500,
            provider: "entra".into(),
            tenant: "contoso".into(),
            event_id: "a1".into(),
            provider_event_type: "signIn".into(),
            user: User {
                id: "u1".into(),
                name: "ken@contoso.jp".into(),
                domain: "contoso.jp".into(),
            },
            activity: Activity::MfaVerify,
            factor: Factor::Push,
            outcome: Outcome::Timeout,
            reason: Reason::PushTimeout,
            reason_raw: "500121".into(),
            src: Src {
                ip: Some(IpAddr::from([203, 0, 113, 9])),
                internal: true,
                geo: Some(Geo {
                    country: "JP".into(),
                    city: "Tokyo".into(),
                    lat: Some(35.68),
                    lon: Some(139.76),
                    accuracy_km: Some(20),
                }),
                asn: Some(64500),
                as_org: "Example".into(),
                anonymizer: Anonymizer {
                    anonymous: true,
                    vpn: true,
                    tor: true,
                    hosting: true,
                    proxy: true,
                },
                tags: vec!["known_vpn".into()],
            },
            device: Device {
                user_agent: "Mozilla/5.0".into(),
                os: "iOS 18".into(),
                browser: "Safari 18".into(),
                kind: DeviceType::Mobile,
                id: "d1".into(),
                fingerprint: "fp".into(),
            },
            session_id: "s1".into(),
            app: "Office 365".into(),
            provider_risk: RiskLevel::Medium,
            context: UserContext {
                known_user: true,
                learning: false,
                new_device: true,
                new_country: true,
                new_asn: false,
                unusual_hour: false,
                previous: Some(PreviousSignIn {
                    time: 1_767_600_000_000,
                    ip: Some(IpAddr::from([89, 160, 20, 112])),
                    country: "SE".into(),
                    lat: Some(58.41),
                    lon: Some(15.62),
                }),
                distance_km: Some(8100.0),
                speed_kmh: Some(8100.0),
            },
        }
    }
}

/// The account an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The provider's immutable user id.
    #[serde(default, skip_serializing_if = "is_default")]
    pub id: Text,
    /// The login name: UPN or e-mail as the provider gives it.
    #[serde(default, skip_serializing_if = "is_default")]
    pub name: Text,
    /// The domain part or directory domain.
    #[serde(default, skip_serializing_if = "is_default")]
    pub domain: Text,
}

impl User {
    /// The key detections group a user by: the login name when known (it is what attackers
    /// type and what unknown-user failures carry), else the provider id.
    pub fn key(&self) -> &str {
        if self.name.is_empty() {
            &self.id
        } else {
            &self.name
        }
    }
}

/// The source of a request.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Src {
    /// Source IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// True for private, loopback, link-local and other non-routable addresses (no geo lookup).
    #[serde(default, skip_serializing_if = "is_default")]
    pub internal: bool,
    /// Geo-location of the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo: Option<Geo>,
    /// Autonomous system number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn: Option<u32>,
    /// Autonomous system organisation.
    #[serde(default, skip_serializing_if = "is_default")]
    pub as_org: Text,
    /// Anonymizer flags (VPN, Tor, hosting, proxy).
    #[serde(default, skip_serializing_if = "is_default")]
    pub anonymizer: Anonymizer,
    /// Tags from CIDR lists (e.g. `corporate_egress`, `known_vpn`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Text>,
}

/// Where an address is.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Geo {
    /// ISO 3166-1 alpha-2 country code.
    #[serde(default, skip_serializing_if = "is_default")]
    pub country: Text,
    /// City name (English).
    #[serde(default, skip_serializing_if = "is_default")]
    pub city: Text,
    /// Latitude in degrees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    /// Longitude in degrees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
    /// Accuracy radius in km, when the database gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_km: Option<u32>,
}

/// Anonymizer flags of a source address.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct Anonymizer {
    /// Any kind of anonymizer.
    #[serde(default, skip_serializing_if = "is_default")]
    pub anonymous: bool,
    /// Anonymous VPN.
    #[serde(default, skip_serializing_if = "is_default")]
    pub vpn: bool,
    /// Tor exit node.
    #[serde(default, skip_serializing_if = "is_default")]
    pub tor: bool,
    /// Hosting / cloud provider.
    #[serde(default, skip_serializing_if = "is_default")]
    pub hosting: bool,
    /// Public or residential proxy.
    #[serde(default, skip_serializing_if = "is_default")]
    pub proxy: bool,
}

/// The client device.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// The raw User-Agent string.
    #[serde(default, skip_serializing_if = "is_default")]
    pub user_agent: Text,
    /// Operating system family and major version (e.g. `Windows 11`, `iOS 18`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub os: Text,
    /// Browser or client family and major version.
    #[serde(default, skip_serializing_if = "is_default")]
    pub browser: Text,
    /// Device kind.
    #[serde(rename = "type", default, skip_serializing_if = "is_default")]
    pub kind: DeviceType,
    /// The provider's device id, when it gives one.
    #[serde(default, skip_serializing_if = "is_default")]
    pub id: Text,
    /// A stable hash of the normalized device facts (see the enricher).
    #[serde(default, skip_serializing_if = "is_default")]
    pub fingerprint: Text,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_event_parses_and_defaults_are_empty() {
        let ev: AuthEvent = serde_json::from_str(
            r#"{"time":1,"provider":"okta","event_id":"x","activity":"logon","outcome":"success"}"#,
        )
        .unwrap();
        assert_eq!(ev.factor, Factor::None);
        assert_eq!(ev.reason, Reason::None);
        assert!(ev.src.ip.is_none());
        // Empty fields stay out of the JSON form.
        assert_eq!(
            serde_json::to_string(&ev).unwrap(),
            r#"{"time":1,"provider":"okta","event_id":"x","activity":"logon","outcome":"success"}"#
        );
    }

    #[test]
    fn full_event_round_trips() {
        let line = r#"{"time":1767603600000,"provider":"entra","tenant":"contoso","event_id":"a1","provider_event_type":"signIn","user":{"id":"u1","name":"ken@contoso.jp","domain":"contoso.jp"},"activity":"mfa_verify","factor":"push","outcome":"timeout","reason":"push_timeout","reason_raw":"500121","src":{"ip":"203.0.113.9","geo":{"country":"JP","city":"Tokyo","lat":35.68,"lon":139.76},"asn":64500,"as_org":"Example","anonymizer":{"anonymous":true,"vpn":true},"tags":["known_vpn"]},"device":{"user_agent":"Mozilla/5.0","os":"iOS 18","browser":"Safari 18","type":"mobile","id":"d1","fingerprint":"fp"},"session_id":"s1","app":"Office 365","provider_risk":"medium"}"#;
        let ev: AuthEvent = serde_json::from_str(line).unwrap();
        assert_eq!(serde_json::to_string(&ev).unwrap(), line);
        assert_eq!(ev.user.key(), "ken@contoso.jp");
    }

    #[test]
    fn wrong_types_and_unknown_fields_are_rejected() {
        let e = serde_json::from_str::<AuthEvent>(
            r#"{"time":"soon","provider":"okta","event_id":"x","activity":"logon","outcome":"success"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
        let e = serde_json::from_str::<AuthEvent>(
            r#"{"time":1,"provider":"okta","event_id":"x","activity":"logon","outcome":"success","colour":1}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `colour`"), "{e}");
    }
}
