//! Types that cross the wire between the pages and the server functions.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    Staff,
    Admin,
    Owner,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Owner, Role::Admin, Role::Staff];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Staff => "staff",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Role::Staff => "Staff",
            Role::Admin => "Admin",
            Role::Owner => "Owner",
        }
    }

    pub fn is_admin(self) -> bool {
        self >= Role::Admin
    }
}

/// The clinic a session acts in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clinic {
    pub id: String,
    pub name: String,
    pub slug: String,
}

/// A clinic the person may switch to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClinicChoice {
    pub id: String,
    pub name: String,
    pub role: Role,
}

/// Who is signed in, where, and as what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub user_id: String,
    pub name: String,
    pub email: String,
    pub clinic: Clinic,
    pub role: Role,
    pub clinics: Vec<ClinicChoice>,
    /// A failed payment, as the banner on every page says it (worded for the person's role).
    pub payment_notice: Option<PaymentNotice>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentNotice {
    pub message: String,
    /// Model calls are stopped (the grace period has ended).
    pub blocked: bool,
}

/// A plan as the Billing page offers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanOption {
    pub id: String,
    pub name: String,
    /// Micro-dollars a month; `None`: priced by agreement.
    pub base_price_micro_usd: Option<i64>,
    pub included_tokens: Option<i64>,
    pub storage_mb: Option<i64>,
    pub overage_micro_usd_per_1k: i64,
    pub max_agents: Option<i32>,
    pub self_serve: bool,
}

/// Admin -> Billing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingOverview {
    /// Stripe is configured on this server.
    pub enabled: bool,
    pub plan: PlanOption,
    /// `1 Nov 2026`, `30 Nov 2026`: the calendar month the allowance is counted over.
    pub period_start: String,
    pub period_end: String,
    /// Stripe's subscription status, if there is a subscription.
    pub subscription_status: Option<String>,
    /// The subscription is running (a plan change then moves it).
    pub live_subscription: bool,
    /// `1 Dec 2026`: the next invoice, while the subscription runs.
    pub renews: Option<String>,
    /// The clinic has a Stripe customer (so the portal can open).
    pub has_customer: bool,
    pub used_tokens: i64,
    /// Tokens beyond the allowance so far this month.
    pub overage_tokens: i64,
    /// What the overage would cost by the end of the month at the current rate.
    pub projected_overage_micro_usd: i64,
    pub agents: i64,
    pub plans: Vec<PlanOption>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRow {
    pub user_id: String,
    pub name: String,
    pub email: String,
    pub role: Role,
    /// `YYYY-MM-DD`, formatted on the server so both renders agree.
    pub joined: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingInvite {
    pub id: String,
    pub email: String,
    pub role: Role,
    pub expires: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersPage {
    pub me: String,
    pub my_role: Role,
    pub members: Vec<MemberRow>,
    pub invitations: Vec<PendingInvite>,
}

/// A fresh invitation: the link is shown once, to the admin who made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteCreated {
    pub email: String,
    pub role: Role,
    pub link: String,
    pub expires: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitationInfo {
    pub clinic_name: String,
    pub email: String,
    pub role: Role,
    pub account_exists: bool,
}

/// A provider key as the admin page shows it: never the key itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderKeyRow {
    /// `openai`, `anthropic` or `openai_compatible`.
    pub provider: String,
    pub label: String,
    pub configured: bool,
    pub last_four: Option<String>,
    pub base_url: Option<String>,
    pub added_by: Option<String>,
    pub added: Option<String>,
    pub last_used: Option<String>,
}

/// The result of the Test button on a provider key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCheck {
    pub ok: bool,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub created_by: Option<String>,
    pub created: String,
    pub last_used: Option<String>,
    pub revoked: Option<String>,
}

/// A new API key: the token is shown this once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedApiKey {
    pub name: String,
    pub token: String,
}

/// Admin -> Usage: this month's use against the plan and the spending cap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageSummary {
    pub plan_name: String,
    /// `YYYY-MM` (UTC).
    pub month: String,
    /// Tokens included each month; `None`: unlimited.
    pub included_tokens: Option<i64>,
    /// Allowance plus what the cap buys; `None`: no limit.
    pub token_limit: Option<i64>,
    pub used_tokens: i64,
    /// Held by calls in progress.
    pub reserved_tokens: i64,
    pub requests: i64,
    /// Provider list price of this month's calls, in micro-dollars.
    pub cost_micro_usd: i64,
    /// Price of 1,000 tokens beyond the allowance, in micro-dollars.
    pub overage_micro_usd_per_1k: i64,
    /// `None`: no cap.
    pub spending_cap_micro_usd: Option<i64>,
}

/// Reads a dollar amount (`12`, `12.5`, `$1,200.00`) as micro-dollars.
pub fn parse_dollars(raw: &str) -> Result<i64, String> {
    let cleaned: String = raw
        .trim()
        .trim_start_matches('$')
        .chars()
        .filter(|c| *c != ',' && !c.is_whitespace())
        .collect();
    let bad = || {
        format!(
            "{:?} is not an amount in dollars, such as 25 or 12.50.",
            raw.trim()
        )
    };
    if cleaned.is_empty() {
        return Err("Enter an amount in dollars, such as 25 or 12.50.".into());
    }
    let (whole, cents) = match cleaned.split_once('.') {
        Some((w, c)) => (w, c),
        None => (cleaned.as_str(), ""),
    };
    if whole.is_empty() && cents.is_empty()
        || !whole.chars().all(|c| c.is_ascii_digit())
        || !cents.chars().all(|c| c.is_ascii_digit())
        || cents.len() > 2
    {
        return Err(bad());
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    if whole > 1_000_000 {
        return Err("The cap can be at most $1,000,000 a month.".into());
    }
    let cents: i64 = format!("{cents:0<2}").parse().map_err(|_| bad())?;
    Ok(whole * 1_000_000 + cents * 10_000)
}

/// Micro-dollars as `$1,234.56` (small amounts keep four decimals: `$0.0042`).
pub fn dollars(micro: i64) -> String {
    if micro > 0 && micro < 100 {
        return "under $0.0001".into();
    }
    if micro > 0 && micro < 10_000 {
        return format!("${:.4}", micro as f64 / 1_000_000.0);
    }
    let cents = (micro + 5_000) / 10_000;
    format!("${}.{:02}", thousands(cents / 100), cents % 100)
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_round_trip() {
        assert_eq!(parse_dollars("12.5"), Ok(12_500_000));
        assert_eq!(parse_dollars("$1,200.00"), Ok(1_200_000_000));
        assert_eq!(parse_dollars("0"), Ok(0));
        assert!(parse_dollars("-3").is_err());
        assert!(parse_dollars("1.234").is_err());
        assert!(parse_dollars("").is_err());
        assert!(parse_dollars("abc").is_err());
        assert_eq!(dollars(1_200_000_000), "$1,200.00");
        assert_eq!(dollars(4_200), "$0.0042");
        assert_eq!(dollars(13), "under $0.0001");
        assert_eq!(dollars(0), "$0.00");
    }
}

/// An agent as the UI shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRow {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub system_prompt: String,
    pub model: String,
    /// As typed: `0.7`.
    pub temperature: String,
    pub max_reply_tokens: i32,
    pub context_tokens: i32,
}

/// Admin -> Agents: the agents, the plan's limit and the models the clinic can use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentsPage {
    pub agents: Vec<AgentRow>,
    pub plan_name: String,
    pub max_agents: Option<i32>,
    pub models: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationRow {
    pub id: String,
    pub title: String,
    pub agent_name: Option<String>,
    pub updated: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageView {
    pub id: String,
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
    /// `pending`, `generating`, `complete`, `stopped` or `failed`.
    pub status: String,
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationView {
    pub id: String,
    pub title: String,
    pub agent_name: Option<String>,
    pub messages: Vec<MessageView>,
}

/// The chat start page: the conversations and the agents to start one with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatHome {
    pub conversations: Vec<ConversationRow>,
    pub agents: Vec<AgentRow>,
}

/// A message sent: where its reply will stream from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    pub conversation_id: String,
    pub reply_id: String,
}

/// One stacked series of a daily chart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChartSeries {
    pub name: String,
    /// One value per day of the month.
    pub values: Vec<i64>,
}

/// Tokens per day, stacked by one breakdown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyChart {
    pub title: String,
    pub series: Vec<ChartSeries>,
}

/// Admin -> Usage: the month's tokens per day by model, agent and caller, against last month.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageDashboard {
    pub month: String,
    pub previous_month: String,
    pub days: u32,
    pub charts: Vec<DailyChart>,
    pub requests_per_day: Vec<i64>,
    pub tokens: i64,
    pub requests: i64,
    pub cost_micro_usd: i64,
    pub previous_tokens: i64,
    pub previous_requests: i64,
    pub previous_cost_micro_usd: i64,
}

fn escape_xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Colours of the stacked series, in order.
pub const CHART_COLOURS: [&str; 8] = [
    "#0f766e", "#2563eb", "#d97706", "#9333ea", "#dc2626", "#0891b2", "#65a30d", "#6b7280",
];

/// A stacked bar chart of `series` over `days` days, as SVG markup (drawn on the server, no
/// script and nothing loaded from elsewhere). Each bar has a tooltip with its numbers.
pub fn stacked_bars_svg(series: &[ChartSeries], days: u32, label: &str) -> String {
    let (w, h, left, bottom) = (640.0_f64, 180.0_f64, 44.0_f64, 20.0_f64);
    let totals: Vec<i64> = (0..days as usize)
        .map(|d| {
            series
                .iter()
                .map(|s| s.values.get(d).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let max = totals.iter().copied().max().unwrap_or(0).max(1) as f64;
    let slot = (w - left) / days.max(1) as f64;
    let bar = (slot * 0.7).max(1.0);
    let plot_h = h - bottom - 8.0;
    let mut out = format!(
        "<svg viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{}\" xmlns=\"http://www.w3.org/2000/svg\" class=\"bars\">",
        escape_xml(label)
    );
    out.push_str(&format!(
        "<text x=\"0\" y=\"12\" class=\"axis\">{}</text><line x1=\"{left}\" y1=\"{}\" x2=\"{w}\" y2=\"{}\" class=\"base\"/>",
        crate::dto::thousands(max as i64),
        h - bottom,
        h - bottom
    ));
    for d in 0..days as usize {
        let x = left + d as f64 * slot + (slot - bar) / 2.0;
        let mut y = h - bottom;
        for (i, s) in series.iter().enumerate() {
            let v = s.values.get(d).copied().unwrap_or(0);
            if v <= 0 {
                continue;
            }
            let bh = (v as f64 / max * plot_h).max(1.0);
            y -= bh;
            out.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{bh:.1}\" fill=\"{}\"><title>Day {}: {} — {} tokens</title></rect>",
                CHART_COLOURS[i % CHART_COLOURS.len()],
                d + 1,
                escape_xml(&s.name),
                crate::dto::thousands(v)
            ));
        }
        if d == 0 || (d + 1) % 5 == 0 {
            out.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{}\" class=\"axis\" text-anchor=\"middle\">{}</text>",
                x + bar / 2.0,
                h - 4.0,
                d + 1
            ));
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod chart_tests {
    use super::*;

    #[test]
    fn charts_escape_names_and_scale_to_the_largest_day() {
        let series = vec![
            ChartSeries {
                name: "<script>x</script>".into(),
                values: vec![10, 0, 30],
            },
            ChartSeries {
                name: "gpt-4o".into(),
                values: vec![10, 5, 0],
            },
        ];
        let svg = stacked_bars_svg(&series, 3, "Tokens per day");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("&lt;script&gt;"));
        assert_eq!(svg.matches("<rect").count(), 4);
        assert!(svg.contains("Day 3: &lt;script&gt;x&lt;/script&gt; — 30 tokens"));
    }
}
