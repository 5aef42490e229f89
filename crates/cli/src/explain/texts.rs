//! Words: names of classes, severities, activities and reasons, and the generic explanations, in English and Japanese.

use super::*;

pub(super) fn tr(lang: Language, en: &'static str, ja: &'static str) -> &'static str {
    match lang {
        Language::En => en,
        Language::Ja => ja,
    }
}

pub(super) fn class_name(c: CauseClass, lang: Language) -> &'static str {
    match c {
        CauseClass::User => tr(lang, "User", "ユーザー"),
        CauseClass::Device => tr(lang, "Device", "端末"),
        CauseClass::Network => tr(lang, "Network", "ネットワーク"),
        CauseClass::System => tr(lang, "System", "システム"),
        CauseClass::Attack => tr(lang, "Attack", "攻撃"),
    }
}

pub(super) fn class_meaning(c: CauseClass, lang: Language) -> &'static str {
    match c {
        // Not "mistake" alone: a push the user denied is their own action, for a reason only
        // they can tell (a mis-tap, or a request they had not started).
        CauseClass::User => tr(
            lang,
            "the user's own action or mistake",
            "本人の操作・操作ミス",
        ),
        CauseClass::Device => tr(
            lang,
            "the user's phone, security key or authenticator",
            "スマートフォン・セキュリティキー・認証アプリの問題",
        ),
        CauseClass::Network => tr(
            lang,
            "the network between the user and the MFA service",
            "ユーザーと MFA サービスの間のネットワークの問題",
        ),
        CauseClass::System => tr(
            lang,
            "enrollment, policy, lockout or the identity provider",
            "登録・ポリシー・ロックアウト・ID プロバイダー側の問題",
        ),
        CauseClass::Attack => tr(
            lang,
            "someone else is trying to get into the account",
            "第三者がアカウントへの侵入を試みています",
        ),
    }
}

pub(super) fn severity_name(s: Severity, lang: Language) -> &'static str {
    match s {
        Severity::Critical => tr(lang, "CRITICAL", "緊急"),
        Severity::High => tr(lang, "HIGH", "高"),
        Severity::Medium => tr(lang, "MEDIUM", "中"),
        Severity::Low => tr(lang, "LOW", "低"),
        Severity::Info => tr(lang, "INFO", "情報"),
    }
}

pub(super) fn activity_name(a: Activity, lang: Language) -> &'static str {
    match a {
        Activity::Other => tr(lang, "other", "その他"),
        Activity::Logon => tr(lang, "sign-in", "サインイン"),
        Activity::MfaChallenge => tr(lang, "MFA request", "MFA 要求"),
        Activity::MfaVerify => tr(lang, "MFA answer", "MFA 応答"),
        Activity::Logoff => tr(lang, "sign-out", "サインアウト"),
        Activity::AccountLock => tr(lang, "account locked", "ロック"),
        Activity::AccountUnlock => tr(lang, "account unlocked", "ロック解除"),
        Activity::PasswordReset => tr(lang, "password reset", "パスワード再設定"),
        Activity::MfaEnroll => tr(lang, "MFA enrolled", "MFA 登録"),
        Activity::MfaReset => tr(lang, "MFA reset", "MFA リセット"),
        Activity::PolicyEvaluation => tr(lang, "policy check", "ポリシー判定"),
        Activity::AccountDisable => tr(lang, "account disabled", "アカウント無効化"),
    }
}

pub(super) fn factor_name(f: Factor, lang: Language) -> &'static str {
    match f {
        Factor::None => "–",
        Factor::Password => tr(lang, "password", "パスワード"),
        Factor::Push => tr(lang, "push", "プッシュ"),
        Factor::Totp => tr(lang, "app code", "アプリのコード"),
        Factor::Sms => tr(lang, "SMS code", "SMS コード"),
        Factor::Voice => tr(lang, "voice call", "音声通話"),
        Factor::Email => tr(lang, "e-mail", "メール"),
        Factor::Webauthn => tr(lang, "security key", "セキュリティキー"),
        Factor::HardwareToken => tr(lang, "hardware token", "ハードウェアトークン"),
        Factor::Biometric => tr(lang, "biometric", "生体認証"),
    }
}

pub(super) fn outcome_name(o: Outcome, lang: Language) -> &'static str {
    match o {
        Outcome::Success => tr(lang, "ok", "成功"),
        Outcome::Failure => tr(lang, "FAILED", "失敗"),
        Outcome::Denied => tr(lang, "DENIED", "拒否"),
        Outcome::Timeout => tr(lang, "NO ANSWER", "無応答"),
        Outcome::Challenge => tr(lang, "asked", "要求"),
        Outcome::Blocked => tr(lang, "BLOCKED", "ブロック"),
    }
}

pub(super) fn reason_name(r: Reason, lang: Language) -> &'static str {
    match r {
        Reason::None => "",
        Reason::InvalidCredentials => tr(lang, "wrong password", "パスワード誤り"),
        Reason::UnknownUser => tr(lang, "unknown user name", "存在しないユーザー名"),
        Reason::InvalidOtp => tr(lang, "wrong code", "コード誤り"),
        Reason::PushDenied => tr(lang, "push denied", "プッシュ拒否"),
        Reason::PushTimeout => tr(lang, "push not answered", "プッシュ無応答"),
        Reason::UserReportedFraud => tr(lang, "reported as fraud", "不正として報告"),
        Reason::DeviceNotRegistered => tr(lang, "device not registered", "端末未登録"),
        Reason::FactorNotEnrolled => tr(lang, "method not enrolled", "認証方式未登録"),
        Reason::MethodMismatch => tr(lang, "method not allowed", "認証方式が許可されていない"),
        Reason::PolicyDenied => tr(lang, "denied by policy", "ポリシーで拒否"),
        Reason::RiskBlocked => tr(lang, "blocked as risky", "リスク判定でブロック"),
        Reason::LockedOut => tr(lang, "account locked", "ロックアウト"),
        Reason::MfaRequired => tr(lang, "MFA not completed", "MFA 未完了"),
        Reason::ProviderError => tr(lang, "provider error", "プロバイダーのエラー"),
        Reason::RateLimited => tr(lang, "too many attempts", "試行回数の制限"),
        Reason::AccountDisabled => tr(lang, "account disabled", "アカウント無効"),
        Reason::PasswordExpired => tr(lang, "password expired", "パスワード期限切れ"),
        Reason::AuthenticatorError => tr(lang, "key/biometric error", "キー・生体認証のエラー"),
        Reason::Other => tr(lang, "other", "その他"),
    }
}

/// A reason as the cause groups list it: `none given` where [`reason_name`] is empty.
pub(super) fn reason_label(r: Reason, lang: Language) -> &'static str {
    match r {
        Reason::None => tr(lang, "none given", "理由なし"),
        r => reason_name(r, lang),
    }
}

/// A summary and steps in one language.
pub(super) struct Text {
    pub(super) summary: &'static str,
    pub(super) steps: &'static [&'static str],
}

impl Generic {
    pub(super) fn text(self, lang: Language) -> Text {
        let (en, ja) = self.texts();
        match lang {
            Language::En => en,
            Language::Ja => ja,
        }
    }

    pub(super) fn texts(self) -> (Text, Text) {
        let t = |summary, steps| Text { summary, steps };
        match self {
            Generic::WrongPassword => (
                t(
                    "The password was wrong: a typo, or an old password still saved on a device.",
                    &[
                        "Ask the user to retype the password carefully (Caps Lock, keyboard layout).",
                        "If it was changed recently, have them update it wherever it is saved (phone mail app, browser, mapped drives).",
                        "If the user did not try to sign in at those times, treat it as a password attack and escalate.",
                    ],
                ),
                t(
                    "パスワードが誤っていました。入力ミスか、端末に古いパスワードが保存されたままになっている可能性があります。",
                    &[
                        "Caps Lock やキーボード配列に注意して、パスワードを入力し直すよう案内してください。",
                        "最近パスワードを変更した場合は、保存されている場所（スマートフォンのメールアプリ、ブラウザー、ネットワークドライブ）も更新してもらってください。",
                        "その時刻にユーザー本人がサインインしていなければ、パスワード攻撃として扱いエスカレーションしてください。",
                    ],
                ),
            ),
            Generic::UnknownName => (
                t(
                    "The sign-in name was not recognised: a mistyped user name or the wrong domain.",
                    &[
                        "Confirm the exact sign-in name (UPN or e-mail address) the user should use.",
                        "Check in the admin console that the account exists and has not been renamed.",
                    ],
                ),
                t(
                    "サインイン名が認識されませんでした。ユーザー名の入力ミスか、ドメインの誤りと考えられます。",
                    &[
                        "ユーザーが使うべき正確なサインイン名（UPN またはメールアドレス）を確認してください。",
                        "管理コンソールで、アカウントが存在し名前が変更されていないか確認してください。",
                    ],
                ),
            ),
            Generic::WrongCode => (
                t(
                    "A one-time code was wrong or had expired.",
                    &[
                        "Ask the user to type the code shown right now, and to wait for a new one if it is about to expire (codes last about 30 seconds).",
                        "If correct codes from an authenticator app or token keep failing, check the phone's automatic date and time setting (clock drift).",
                    ],
                ),
                t(
                    "ワンタイムコードが誤っているか、期限切れでした。",
                    &[
                        "いま表示されているコードを入力し、期限が切れそうなときは新しいコードを待つよう案内してください（コードの有効期間は約 30 秒です）。",
                        "認証アプリやトークンの正しいコードでも失敗が続く場合は、スマートフォンの日付と時刻の自動設定を確認してください（時刻ずれ）。",
                    ],
                ),
            ),
            Generic::WrongSentCode => (
                t(
                    "A code sent by SMS, voice call or e-mail was wrong or had expired.",
                    &[
                        "Ask the user to type the code of the latest message or call only: each new request makes the earlier codes invalid, and a code expires after a few minutes.",
                        "If codes arrive late or not at all, check the phone number or e-mail address on the account and the phone's reception (roaming, SMS filtering).",
                    ],
                ),
                t(
                    "SMS・音声通話・メールで送られたコードが誤っているか、期限切れでした。",
                    &[
                        "最後に届いたメッセージまたは通話のコードだけを入力するよう案内してください。新しく要求すると以前のコードは無効になり、コードは数分で期限切れになります。",
                        "コードが遅れて届く、または届かない場合は、アカウントに登録された電話番号やメールアドレスと、スマートフォンの受信状況（ローミング、SMS フィルター）を確認してください。",
                    ],
                ),
            ),
            Generic::MethodNotAllowed => (
                t(
                    "The MFA method used is not allowed for this sign-in: the sign-on policy restricts it, or it is not enrolled for the account.",
                    &[
                        "Check in the admin console which MFA methods the user has enrolled and which the policy allows for this application.",
                        "If the policy is right, show the user where to pick an allowed method at the prompt (\"Sign in another way\"); if not, correct the policy or the enrollment.",
                    ],
                ),
                t(
                    "使われた MFA 方式はこのサインインでは許可されていません。サインオンポリシーで制限されているか、アカウントに登録されていない方式です。",
                    &[
                        "ユーザーが登録している MFA 方式と、このアプリケーションでポリシーが許可している方式を管理コンソールで確認してください。",
                        "ポリシーが正しければ、プロンプトで許可された方式を選ぶ場所（「別の方法でサインイン」など）を案内してください。正しくなければ、ポリシーまたは登録を修正してください。",
                    ],
                ),
            ),
            Generic::MfaNotCompleted => (
                t(
                    "The sign-in stopped at the MFA step.",
                    &[
                        "Ask the user whether the MFA prompt appeared and whether they completed it.",
                        "If no prompt ever appears, check the user's enrolled methods in the admin console.",
                    ],
                ),
                t(
                    "サインインが MFA の手順で止まりました。",
                    &[
                        "MFA のプロンプトが表示されたか、最後まで操作したかをユーザーに確認してください。",
                        "プロンプトが表示されない場合は、管理コンソールで登録済みの方式を確認してください。",
                    ],
                ),
            ),
            Generic::PasswordExpired => (
                t(
                    "The password has expired.",
                    &[
                        "Guide the user through changing the password (self-service portal or admin console).",
                        "Remind them to update the password wherever it is saved.",
                    ],
                ),
                t(
                    "パスワードの有効期限が切れています。",
                    &[
                        "パスワードの変更手順（セルフサービスポータルまたは管理コンソール）を案内してください。",
                        "パスワードを保存している場所もすべて更新するよう伝えてください。",
                    ],
                ),
            ),
            Generic::UnexpectedPush => (
                t(
                    "The user denied a push request: a mis-tap, or a request they had not started. No attack on the account was detected at the time. Ask them which.",
                    &[
                        "Ask the user why they denied it: a mis-tap, or a request they had not started?",
                        "If they had not started it, someone else has the password: reset it, revoke all sessions and escalate.",
                    ],
                ),
                t(
                    "ユーザーがプッシュ要求を拒否しました。誤操作か、本人が始めていない要求のどちらかです（その時点でアカウントへの攻撃は検知されていません）。どちらか本人に確認してください。",
                    &[
                        "拒否した理由（誤操作か、本人が始めていないサインインの要求か）をユーザーに確認してください。",
                        "本人が始めたものでなければ第三者がパスワードを知っています。パスワードをリセットし、すべてのセッションを無効化してエスカレーションしてください。",
                    ],
                ),
            ),
            Generic::DeclinedRequest => (
                t(
                    "The user declined an MFA request (a call or message, not a push): a mis-tap, or a request they had not started. No attack on the account was detected at the time. Ask them which.",
                    &[
                        "Ask the user why they declined it: a mistake, or a request they had not started?",
                        "If they had not started it, someone else has the password: reset it, revoke all sessions and escalate.",
                    ],
                ),
                t(
                    "ユーザーが MFA の要求（プッシュではなく通話やメッセージ）を拒否しました。誤操作か、本人が始めていない要求のどちらかです（その時点でアカウントへの攻撃は検知されていません）。どちらか本人に確認してください。",
                    &[
                        "拒否した理由（誤操作か、本人が始めていないサインインの要求か）をユーザーに確認してください。",
                        "本人が始めたものでなければ第三者がパスワードを知っています。パスワードをリセットし、すべてのセッションを無効化してエスカレーションしてください。",
                    ],
                ),
            ),
            Generic::PushNotDelivered => (
                t(
                    "A push notification was not answered in time: the phone probably did not receive it.",
                    &[
                        "Check that notifications are allowed for the authenticator app and that battery optimization does not stop it.",
                        "Check the phone has a data connection; try mobile data instead of Wi-Fi.",
                        "Meanwhile the user can use the app's one-time code; re-register the device if pushes never arrive.",
                    ],
                ),
                t(
                    "プッシュ通知に時間内の応答がありませんでした。スマートフォンに通知が届いていない可能性があります。",
                    &[
                        "認証アプリの通知が許可され、バッテリー最適化で停止されていないか確認してください。",
                        "スマートフォンがデータ通信できるか確認し、Wi-Fi ではなくモバイル回線でも試してください。",
                        "当面はアプリのワンタイムコードを使えます。プッシュが届かないままなら端末を再登録してください。",
                    ],
                ),
            ),
            Generic::AuthenticatorFault => (
                t(
                    "A security key or biometric reader failed.",
                    &[
                        "Try another USB port or NFC position, and make sure the browser is up to date.",
                        "Re-register the fingerprint or face if the platform biometric keeps failing.",
                        "Use a backup method meanwhile; replace the key if it fails on several computers.",
                    ],
                ),
                t(
                    "セキュリティキーまたは生体認証の読み取りに失敗しました。",
                    &[
                        "別の USB ポートや NFC の位置で試し、ブラウザーが最新か確認してください。",
                        "生体認証が繰り返し失敗する場合は、指紋や顔を再登録してください。",
                        "その間はバックアップの方式を使い、複数の PC で失敗するならキーを交換してください。",
                    ],
                ),
            ),
            Generic::NotEnrolled => (
                t(
                    "The MFA method or device is not (or no longer) registered for the account, typically after a phone change.",
                    &[
                        "Check the user's enrolled methods in the admin console.",
                        "Verify the user's identity by a trusted channel, reset the old enrollment and have them enroll the new device.",
                    ],
                ),
                t(
                    "MFA の方式または端末がアカウントに登録されていません（登録が解除された可能性があります）。機種変更の後によく起こります。",
                    &[
                        "管理コンソールでユーザーの登録済みの方式を確認してください。",
                        "信頼できる経路で本人確認をしたうえで古い登録をリセットし、新しい端末を登録してもらってください。",
                    ],
                ),
            ),
            Generic::ProviderFault => (
                t(
                    "The MFA provider returned an error: a fault on the service side, not the user's.",
                    &[
                        "Check the MFA provider's status page and incident notices.",
                        "Have the user use another enrolled method until the service recovers.",
                        "Do not reset the user's MFA enrollment for this.",
                    ],
                ),
                t(
                    "MFA プロバイダーがエラーを返しました。ユーザーではなくサービス側の障害です。",
                    &[
                        "MFA プロバイダーのステータスページと障害情報を確認してください。",
                        "復旧するまで、登録済みの別の方式を使うようユーザーに案内してください。",
                        "このエラーを理由に MFA の登録をリセットしないでください。",
                    ],
                ),
            ),
            Generic::PolicyBlock => (
                t(
                    "A sign-on or risk policy blocked the sign-in: a policy decision, not a fault.",
                    &[
                        "Check in the admin console which policy blocked the sign-in and why (location, device, risk level).",
                        "If the user is travelling or on a new network, confirm by a trusted channel before making an exception.",
                        "Do not weaken the policy for everyone to fix one user.",
                    ],
                ),
                t(
                    "サインオンポリシーまたはリスクポリシーがサインインをブロックしました。障害ではなくポリシーによる判定です。",
                    &[
                        "どのポリシーがなぜサインインをブロックしたか（場所、端末、リスクレベル）を管理コンソールで確認してください。",
                        "出張中や新しいネットワークからの利用であれば、例外を設ける前に信頼できる経路で本人に確認してください。",
                        "1 人のためにポリシーを全員向けに緩めないでください。",
                    ],
                ),
            ),
            Generic::Lockout => (
                t(
                    "The account is locked after repeated failed sign-ins.",
                    &[
                        "Confirm with the user by a trusted channel whether the failures were theirs (an old password saved on a phone is common).",
                        "Unlock the account after verifying the user's identity.",
                        "If the failures were not theirs, treat it as a password attack and escalate.",
                    ],
                ),
                t(
                    "サインインの失敗が続いたため、アカウントがロックされています。",
                    &[
                        "信頼できる経路で、失敗が本人によるものか確認してください（スマートフォンに古いパスワードが残っていることがよくあります）。",
                        "本人確認のうえでロックを解除してください。",
                        "本人の失敗でなければパスワード攻撃として扱い、エスカレーションしてください。",
                    ],
                ),
            ),
            Generic::Disabled => (
                t(
                    "The account is disabled.",
                    &[
                        "Check in the admin console who disabled the account and why (leaver process, security suspension).",
                        "Re-enable it only once that reason is cleared; a security suspension needs the security team's approval.",
                    ],
                ),
                t(
                    "アカウントが無効化されています。",
                    &[
                        "誰がなぜアカウントを無効化したか（退職処理、セキュリティ上の停止など）を管理コンソールで確認してください。",
                        "その理由が解消してから有効化してください。セキュリティ上の停止であれば、セキュリティ担当の承認が必要です。",
                    ],
                ),
            ),
            Generic::Throttled => (
                t(
                    "The provider throttled the sign-ins: too many attempts in a short time.",
                    &[
                        "Ask the user to wait a few minutes before trying again.",
                        "Look for a device or script that keeps retrying with an old password.",
                        "If the attempts were not the user's, treat it as an attack and escalate.",
                    ],
                ),
                t(
                    "短時間の試行が多すぎたため、プロバイダーがサインインを制限しました。",
                    &[
                        "数分待ってから再度試すようユーザーに案内してください。",
                        "古いパスワードで再試行を続けている端末やスクリプトがないか確認してください。",
                        "本人の試行でなければ攻撃として扱い、エスカレーションしてください。",
                    ],
                ),
            ),
            Generic::Unclassified => (
                t(
                    "The provider gave a reason authwatch does not classify; its own code is listed with the reasons.",
                    &[
                        "Look up the provider's code in the admin console's sign-in log or the vendor's documentation.",
                    ],
                ),
                t(
                    "プロバイダーが authwatch の分類にない理由を返しました。プロバイダー独自のコードを理由の欄に示しています。",
                    &[
                        "管理コンソールのサインインログ、またはベンダーのドキュメントでそのコードを調べてください。",
                    ],
                ),
            ),
            Generic::NoReason => (
                t(
                    "The provider gave no reason for the failure.",
                    &[
                        "Open the event in the admin console's sign-in log (its event id is in the JSON report) to see what the provider recorded.",
                        "Ask the user what the screen said at that time.",
                    ],
                ),
                t(
                    "プロバイダーは失敗の理由を記録していません。",
                    &[
                        "管理コンソールのサインインログでそのイベント（イベント ID は JSON レポートにあります）を開き、プロバイダーの記録を確認してください。",
                        "その時に画面に何が表示されたかをユーザーに確認してください。",
                    ],
                ),
            ),
            Generic::DeniedDuringAttack => (
                t(
                    "The user denied an MFA request while an attack on the account was going on, or one from the attacker's address: it was most likely not their own sign-in.",
                    &[
                        "Tell the user never to approve a request they did not start themselves.",
                        "Reset the password, revoke all sessions and refresh tokens, and review the account's recent sign-ins.",
                        "Escalate to the security team with the alerts below.",
                    ],
                ),
                t(
                    "アカウントへの攻撃が続いている間に、または攻撃者のアドレスからの MFA 要求を、ユーザーが拒否しました。本人のサインインではなかった可能性が高いです。",
                    &[
                        "自分で始めていない要求は絶対に承認しないようユーザーに伝えてください。",
                        "パスワードをリセットし、すべてのセッションとリフレッシュトークンを無効化して、最近のサインインを確認してください。",
                        "下記のアラートを添えて、セキュリティ担当にエスカレーションしてください。",
                    ],
                ),
            ),
            Generic::UnansweredDuringAttack => (
                t(
                    "A push request went unanswered while an attack on the account was going on, or came from the attacker's address: it was most likely the attacker's sign-in, which the user ignored or never saw. MFA fatigue counts unanswered pushes as it counts denied ones.",
                    &[
                        "Confirm with the user by a trusted channel that they did not start these sign-ins, and tell them never to approve a push they did not start themselves.",
                        "The password is known to the attacker: reset it, revoke all sessions and refresh tokens, and review the account's recent sign-ins.",
                        "Escalate to the security team with the alerts below; do not re-register the user's phone for this.",
                    ],
                ),
                t(
                    "アカウントへの攻撃が続いている間に、または攻撃者のアドレスから送られたプッシュ要求に応答がありませんでした。攻撃者のサインインで、ユーザーが無視したか気付かなかった可能性が高いです。MFA 疲労攻撃では、拒否と同じく無応答のプッシュも数えます。",
                    &[
                        "信頼できる経路で、これらのサインインを本人が始めていないことを確認し、自分で始めていないプッシュは絶対に承認しないよう伝えてください。",
                        "攻撃者はパスワードを知っています。パスワードをリセットし、すべてのセッションとリフレッシュトークンを無効化して、最近のサインインを確認してください。",
                        "下記のアラートを添えて、セキュリティ担当にエスカレーションしてください。これを理由にスマートフォンを再登録しないでください。",
                    ],
                ),
            ),
            Generic::FraudReported => (
                t(
                    "The user reported an MFA request as fraud: someone else is trying to sign in with their password.",
                    &[
                        "Treat the password as compromised: reset it and revoke all sessions and refresh tokens.",
                        "Thank the user and confirm by a trusted channel that they did not start the sign-in.",
                        "Escalate to the security team.",
                    ],
                ),
                t(
                    "ユーザーが MFA 要求を不正として報告しました。第三者がこのユーザーのパスワードでサインインを試みています。",
                    &[
                        "パスワードが漏えいしたものとして扱い、リセットしてすべてのセッションとリフレッシュトークンを無効化してください。",
                        "報告したユーザーに感謝し、信頼できる経路で本人のサインインでないことを確認してください。",
                        "セキュリティ担当にエスカレーションしてください。",
                    ],
                ),
            ),
        }
    }
}
