//! Yield points above the operators that can emit without end from one input batch.
//!
//! DataFusion makes a plan cooperative at its sources and exchanges (its `EnsureCooperative`
//! rule): a stream that polls its input spends tokio's task budget there, and the task yields
//! once the budget is spent. A join's probe, though, can emit batch after batch from one probe
//! batch without polling its input (a self-join on a column with few values: every probe row
//! matches thousands of rows), and an aggregate over it loops on those batches without ever
//! returning `Pending`. Such a task never yields: it holds its worker thread to the end of the
//! query, and nothing can stop it, since tokio aborts a task only when it yields.
//!
//! [`YieldAfterJoins`] puts DataFusion's [`CooperativeExec`] (one unit of task budget per batch)
//! above every join and unnest, so that those tasks yield as well: other queries share the
//! threads, and a query stopped by the endpoint (statement timeout, cancel request, a client
//! gone) ends at its next yield.

use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;
use std::sync::Arc;

/// The operators that can emit many batches per input batch.
const AMPLIFIERS: [&str; 7] = [
    "HashJoinExec",
    "NestedLoopJoinExec",
    "CrossJoinExec",
    "SortMergeJoinExec",
    "SymmetricHashJoinExec",
    "PiecewiseMergeJoinExec",
    "UnnestExec",
];

/// The physical optimizer rule that makes [`AMPLIFIERS`] cooperative. Registered last: the
/// other rules see the plan without the wrappers.
#[derive(Debug)]
pub(crate) struct YieldAfterJoins;

impl PhysicalOptimizerRule for YieldAfterJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if AMPLIFIERS.contains(&node.name()) {
                Ok(Transformed::yes(
                    Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>
                ))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .data()
    }

    fn name(&self) -> &str {
        "authwatch_yield_after_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
