//! The closed vocabularies of the normalized event and of alerts.
//!
//! Each vocabulary is declared once with [`vocabulary!`]; the macro gives the enum its wire names
//! (snake_case), `as_str`, `FromStr`, the list of all values and a JSON Schema enum, so the rule
//! compiler, the normalizers and the schemas all read the same list.

use serde::{Deserialize, Serialize};

/// A name that is not in a closed vocabulary.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{value:?} is not a valid {vocabulary}; expected one of: {expected}")]
pub struct VocabError {
    /// Which vocabulary (e.g. `activity`).
    pub vocabulary: &'static str,
    /// The rejected value.
    pub value: String,
    /// The accepted values, comma-separated.
    pub expected: String,
}

macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        $name:ident as $vocab:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default,
                 Serialize, Deserialize, schemars::JsonSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $wire)] $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The vocabulary's name, as used in rules and error messages.
            pub const VOCABULARY: &'static str = $vocab;

            /// The wire name (snake_case).
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire,)+ }
            }

            /// Position in [`Self::ALL`]; stable for a given build, used for bitsets.
            pub const fn index(self) -> usize {
                self as usize
            }
        }

        impl std::str::FromStr for $name {
            type Err = VocabError;
            fn from_str(s: &str) -> Result<Self, VocabError> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    _ => Err(VocabError {
                        vocabulary: $vocab,
                        value: s.to_owned(),
                        expected: [$($wire),+].join(", "),
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

vocabulary! {
    /// What the event is about (OCSF 3002 `activity_id`, extended for MFA and account changes).
    Activity as "activity" {
        /// Anything a normalizer could not classify (kept so the event is not lost).
        #[default]
        Other = "other",
        /// A primary sign-in (password or passwordless).
        Logon = "logon",
        /// A second factor was requested: a push sent, a code requested.
        MfaChallenge = "mfa_challenge",
        /// The answer to a second factor: push approved/denied/timed out, code checked.
        MfaVerify = "mfa_verify",
        /// Sign-out or session end.
        Logoff = "logoff",
        /// The account was locked.
        AccountLock = "account_lock",
        /// The account was unlocked.
        AccountUnlock = "account_unlock",
        /// The password was reset or changed.
        PasswordReset = "password_reset",
        /// A factor was enrolled.
        MfaEnroll = "mfa_enroll",
        /// A factor enrollment was removed or reset.
        MfaReset = "mfa_reset",
        /// A sign-on / conditional-access / risk policy was evaluated.
        PolicyEvaluation = "policy_evaluation",
        /// The account was disabled or suspended.
        AccountDisable = "account_disable",
    }
}

vocabulary! {
    /// The authentication factor involved.
    Factor as "factor" {
        /// No factor (e.g. a policy evaluation) or unknown.
        #[default]
        None = "none",
        /// Password.
        Password = "password",
        /// Push notification to an authenticator app.
        Push = "push",
        /// Time-based one-time password.
        Totp = "totp",
        /// SMS code.
        Sms = "sms",
        /// Voice call.
        Voice = "voice",
        /// E-mail code or magic link.
        Email = "email",
        /// WebAuthn / FIDO2 / passkey.
        Webauthn = "webauthn",
        /// Hardware OTP token.
        HardwareToken = "hardware_token",
        /// Platform biometric.
        Biometric = "biometric",
    }
}

vocabulary! {
    /// The result of the step.
    Outcome as "outcome" {
        /// It worked.
        #[default]
        Success = "success",
        /// It failed (wrong password, wrong code, error).
        Failure = "failure",
        /// The user pressed "deny" on a push.
        Denied = "denied",
        /// No answer in time.
        Timeout = "timeout",
        /// A further challenge was issued (MFA required, step-up).
        Challenge = "challenge",
        /// A policy blocked it.
        Blocked = "blocked",
    }
}

vocabulary! {
    /// Why a step did not succeed: a closed vocabulary; the provider's own code is kept beside it.
    Reason as "reason" {
        /// No reason (success) or none given.
        #[default]
        None = "none",
        /// Wrong password.
        InvalidCredentials = "invalid_credentials",
        /// The account does not exist.
        UnknownUser = "unknown_user",
        /// Wrong or expired one-time code.
        InvalidOtp = "invalid_otp",
        /// The user denied the push.
        PushDenied = "push_denied",
        /// The push was not answered in time.
        PushTimeout = "push_timeout",
        /// The user reported the request as fraud.
        UserReportedFraud = "user_reported_fraud",
        /// The device is not (or no longer) registered.
        DeviceNotRegistered = "device_not_registered",
        /// The factor is not enrolled for this user.
        FactorNotEnrolled = "factor_not_enrolled",
        /// The user chose a method the policy does not allow or that is not theirs.
        MethodMismatch = "method_mismatch",
        /// A sign-on / conditional-access policy denied it.
        PolicyDenied = "policy_denied",
        /// The provider's risk engine blocked it.
        RiskBlocked = "risk_blocked",
        /// The account is locked.
        LockedOut = "locked_out",
        /// MFA is required to continue.
        MfaRequired = "mfa_required",
        /// The provider failed (outage, internal error).
        ProviderError = "provider_error",
        /// Throttled.
        RateLimited = "rate_limited",
        /// The account is disabled.
        AccountDisabled = "account_disabled",
        /// The password expired.
        PasswordExpired = "password_expired",
        /// A hardware key or biometric reader error.
        AuthenticatorError = "authenticator_error",
        /// Any other reason; see `reason_raw`.
        Other = "other",
    }
}

vocabulary! {
    /// The kind of client device.
    DeviceType as "device type" {
        /// Not known.
        #[default]
        Unknown = "unknown",
        /// Desktop or laptop.
        Desktop = "desktop",
        /// Phone.
        Mobile = "mobile",
        /// Tablet.
        Tablet = "tablet",
        /// A script, crawler or command-line client.
        Bot = "bot",
    }
}

vocabulary! {
    /// The provider's own risk verdict.
    RiskLevel as "risk level" {
        /// No risk reported.
        #[default]
        None = "none",
        /// Low.
        Low = "low",
        /// Medium.
        Medium = "medium",
        /// High.
        High = "high",
    }
}

vocabulary! {
    /// Alert severity, ordered from least to most severe.
    Severity as "severity" {
        /// Informational: help-desk triage, no action.
        #[default]
        Info = "info",
        /// Low.
        Low = "low",
        /// Medium.
        Medium = "medium",
        /// High.
        High = "high",
        /// Critical: an attack that probably worked; suspension candidate.
        Critical = "critical",
    }
}

vocabulary! {
    /// Why an MFA failure or alert happened: the help desk's first question.
    CauseClass as "cause class" {
        /// The user's own mistake (old code, wrong method, typo).
        #[default]
        User = "user",
        /// The user's device (clock drift, notifications blocked, key or biometric error).
        Device = "device",
        /// The network (firewall blocks push, VPN, unstable link).
        Network = "network",
        /// The identity system (not enrolled, outage, policy block, lockout).
        System = "system",
        /// An attack.
        Attack = "attack",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for a in Activity::ALL {
            assert_eq!(a.as_str().parse::<Activity>().unwrap(), *a);
            let json = serde_json::to_string(a).unwrap();
            assert_eq!(json, format!("\"{}\"", a.as_str()));
        }
        for r in Reason::ALL {
            assert_eq!(r.as_str().parse::<Reason>().unwrap(), *r);
        }
    }

    #[test]
    fn unknown_value_names_vocabulary_and_choices() {
        let err = "pushed".parse::<Outcome>().unwrap_err();
        assert_eq!(err.vocabulary, "outcome");
        assert!(err.to_string().contains("success, failure, denied"));
    }

    #[test]
    fn severity_orders_by_gravity() {
        assert!(Severity::Critical > Severity::High);
        assert!(Severity::Low > Severity::Info);
    }
}
