//! Model list prices, for putting a cost on each call.

use crate::db::Db;
use crate::Result;

/// Model list prices, longest prefix first, for putting a cost on a call.
#[derive(Clone, Debug, Default)]
pub struct Prices {
    rows: Vec<(String, i64, i64)>,
}

impl Prices {
    /// Reads the price list (a global table, not tenant data).
    pub async fn load(db: &Db) -> Result<Self> {
        let mut rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT model_prefix, input_micro_usd_per_mtok, output_micro_usd_per_mtok FROM model_prices",
        )
        .fetch_all(db.pool())
        .await?;
        rows.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
        Ok(Self { rows })
    }

    /// The cost of a call in micro-dollars, rounded up; 0 for a model with no listed price.
    pub fn cost(&self, model: &str, prompt_tokens: i64, completion_tokens: i64) -> i64 {
        let Some((_, input, output)) = self
            .rows
            .iter()
            .find(|(p, _, _)| model.starts_with(p.as_str()))
        else {
            return 0;
        };
        let micro_millionths =
            prompt_tokens as i128 * *input as i128 + completion_tokens as i128 * *output as i128;
        ((micro_millionths + 999_999) / 1_000_000) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_uses_the_longest_prefix_and_rounds_up() {
        let prices = Prices {
            rows: vec![
                ("gpt-4o-mini".into(), 150_000, 600_000),
                ("gpt-4o".into(), 2_500_000, 10_000_000),
            ],
        };
        assert_eq!(prices.cost("gpt-4o-mini-2024", 1_000_000, 0), 150_000);
        assert_eq!(prices.cost("gpt-4o", 1, 0), 3);
        assert_eq!(prices.cost("unknown", 1000, 1000), 0);
    }
}
