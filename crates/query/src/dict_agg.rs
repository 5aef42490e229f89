//! Aggregation keyed by one dictionary-encoded column, on the dictionary's codes.
//!
//! The archive stores enumerations (`outcome`, `activity`, `factor`, `reason`, …) as Arrow
//! dictionaries, and analysts group by them all the time (`GROUP BY outcome`). DataFusion 55 has
//! no group-values implementation for dictionary keys: it hydrates every row's string into the
//! row format, hashes and compares it (`GroupValuesRows`), which made `GROUP BY outcome` over
//! 10M archived events 2–3× slower than DuckDB. Upstream work on this is open
//! (apache/datafusion#7647, #23993, #24822); this module can go when a DataFusion release
//! aggregates dictionaries natively.
//!
//! [`DictionaryAggregation`] is a physical optimizer rule that replaces an [`AggregateExec`]
//! whose input is raw rows and whose only group key is a dictionary column with a
//! [`DictionaryAggregateExec`]. That operator resolves each *distinct dictionary value* of a
//! batch to a group once, then maps the rows' codes to groups with one array lookup per row,
//! and feeds the same [`GroupsAccumulator`]s DataFusion would use. Output schema, partitioning
//! and ordering requirements are the replaced node's, so the rest of the plan is unchanged.
//!
//! Anything else (several keys, grouping sets, aggregates without a groups accumulator, ordered
//! input, a pushed-down limit, dynamic filters) keeps DataFusion's own operator.
//!
//! Unlike DataFusion's operator it does not spill: its groups are the distinct dictionary values
//! (a handful for an enumeration). Its memory is reserved from the session's pool like any
//! operator's, so under a memory limit a refusal fails the query with DataFusion's
//! resources-exhausted error rather than going unaccounted.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{Row, RowConverter, Rows, SortField};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, Statistics, internal_datafusion_err};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{
    AggregateExec, AggregateMode, AggregateOutputMode, aggregate_expressions, evaluate_many,
};
use datafusion::physical_plan::execution_plan::{CardinalityEffect, ReplaceChildrenOptions};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildStats, DisplayAs, DisplayFormatType, ExecutionPlan, InputDistributionRequirements,
    InputOrderMode, PlanProperties, SendableRecordBatchStream, StatisticsArgs,
};
use futures::StreamExt;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Physical optimizer rule: use [`DictionaryAggregateExec`] where it applies (see the module
/// documentation). Register it after DataFusion's own rules, so that they see (and reshape)
/// the ordinary [`AggregateExec`] first.
#[derive(Debug, Default)]
pub struct DictionaryAggregation;

impl PhysicalOptimizerRule for DictionaryAggregation {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(agg) = node.as_ref().downcast_ref::<AggregateExec>() else {
                return Ok(Transformed::no(node));
            };
            match DictionaryAggregateExec::try_new(agg, Arc::clone(&node))? {
                Some(exec) => Ok(Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>)),
                None => Ok(Transformed::no(node)),
            }
        })
        .data()
    }

    fn name(&self) -> &str {
        "authwatch_dictionary_aggregation"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// An [`AggregateExec`] over raw rows grouped by one dictionary column, computed on the
/// dictionary codes. Built by [`DictionaryAggregation`].
#[derive(Debug)]
pub struct DictionaryAggregateExec {
    /// The replaced node: properties, requirements and statistics are its.
    inner: Arc<dyn ExecutionPlan>,
    mode: AggregateMode,
    group_expr: Arc<dyn PhysicalExpr>,
    group_name: String,
    /// Type of the group key: the output column is cast back to it.
    group_type: DataType,
    aggr_expr: Vec<Arc<AggregateFunctionExpr>>,
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    metrics: ExecutionPlanMetricsSet,
}

impl DictionaryAggregateExec {
    /// The replacement for `agg` (whose plan node is `node`), or `None` when it does not apply.
    fn try_new(
        agg: &AggregateExec,
        node: Arc<dyn ExecutionPlan>,
    ) -> Result<Option<DictionaryAggregateExec>> {
        let group_by = agg.group_expr();
        let raw_input = matches!(
            agg.mode(),
            AggregateMode::Partial | AggregateMode::Single | AggregateMode::SinglePartitioned
        );
        if !raw_input
            || !group_by.is_single()
            || group_by.expr().len() != 1
            || agg.limit_options().is_some()
            || !agg.dynamic_expressions_produced().is_empty()
            || *agg.input_order_mode() != InputOrderMode::Linear
            || !agg
                .aggr_expr()
                .iter()
                .all(|a| a.groups_accumulator_supported())
        {
            return Ok(None);
        }
        let (group_expr, group_name) = &group_by.expr()[0];
        let group_type = group_expr.data_type(&agg.input_schema())?;
        if !matches!(group_type, DataType::Dictionary(_, _)) {
            return Ok(None);
        }
        let arguments =
            aggregate_expressions(agg.aggr_expr(), agg.mode(), group_by.num_group_exprs())?;
        Ok(Some(DictionaryAggregateExec {
            inner: node,
            mode: *agg.mode(),
            group_expr: Arc::clone(group_expr),
            group_name: group_name.clone(),
            group_type,
            aggr_expr: agg.aggr_expr().to_vec(),
            arguments,
            filters: agg.filter_expr().to_vec(),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    fn input(&self) -> Result<&Arc<dyn ExecutionPlan>> {
        self.inner
            .children()
            .first()
            .copied()
            .ok_or_else(|| internal_datafusion_err!("aggregate without an input"))
    }
}

impl DisplayAs for DictionaryAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let aggr: Vec<&str> = self.aggr_expr.iter().map(|a| a.name()).collect();
        write!(
            f,
            "DictionaryAggregateExec: mode={:?}, gby=[{} as {}], aggr=[{}]",
            self.mode,
            self.group_expr,
            self.group_name,
            aggr.join(", ")
        )
    }
}

impl ExecutionPlan for DictionaryAggregateExec {
    fn name(&self) -> &str {
        "DictionaryAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.inner.input_distribution_requirements()
    }

    fn required_input_ordering(
        &self,
    ) -> Vec<Option<datafusion::physical_expr::OrderingRequirements>> {
        self.inner.required_input_ordering()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.inner.children()
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.inner.apply_expressions(f)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let node = Arc::clone(&self.inner).replace_children(children, options)?;
        let replacement = match node.as_ref().downcast_ref::<AggregateExec>() {
            Some(agg) => DictionaryAggregateExec::try_new(agg, Arc::clone(&node))?,
            None => None,
        };
        Ok(match replacement {
            Some(exec) => Arc::new(exec),
            // The new input changed what applies (e.g. it is ordered now): DataFusion's own.
            None => node,
        })
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(
                datafusion::physical_plan::execution_plan::ChildrenPropertiesMode::Recompute,
            ),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input()?.execute(partition, Arc::clone(&context))?;
        let schema = self.schema();
        let batch_size = context.session_config().batch_size();
        let reservation = MemoryConsumer::new(format!("DictionaryAggregateExec[{partition}]"))
            .register(context.memory_pool());
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let mut state = GroupState {
            schema: Arc::clone(&schema),
            mode: self.mode,
            group_expr: Arc::clone(&self.group_expr),
            group_type: self.group_type.clone(),
            arguments: self.arguments.clone(),
            filters: self.filters.clone(),
            accumulators: self
                .aggr_expr
                .iter()
                .map(|a| a.create_groups_accumulator())
                .collect::<Result<_>>()?,
            groups: Groups::new(&self.group_type)?,
            group_indices: Vec::new(),
            reservation,
        };
        let output = futures::stream::once(async move {
            let mut input = input;
            while let Some(batch) = input.next().await {
                let batch = batch?;
                let _timer = baseline.elapsed_compute().timer();
                state.update(&batch)?;
            }
            let _timer = baseline.elapsed_compute().timer();
            let batch = state.emit()?;
            let mut out = Vec::new();
            if let Some(batch) = batch {
                let rows = batch.num_rows();
                let step = batch_size.max(1);
                let mut offset = 0;
                while offset < rows {
                    let len = step.min(rows - offset);
                    out.push(Ok(batch.slice(offset, len)));
                    offset += len;
                }
                baseline.record_output(rows);
            }
            baseline.done();
            Ok::<_, datafusion::error::DataFusionError>(futures::stream::iter(out))
        })
        .map(|r| match r {
            Ok(s) => s.boxed(),
            Err(e) => futures::stream::iter(vec![Err(e)]).boxed(),
        })
        .flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, output)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        self.inner.statistics_from_inputs(input_stats, args)
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        self.inner.child_stats_requests(partition)
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        self.inner.cardinality_effect()
    }
}

/// The distinct group keys seen so far, in row format, with their group index.
struct Groups {
    converter: RowConverter,
    /// Group index by the key's row-format bytes.
    index: HashMap<Box<[u8]>, usize>,
    /// The keys in group-index order.
    rows: Rows,
    /// The dictionary values array last seen and its values in row format, reused while the
    /// input keeps sending the same array (Parquet decodes a column chunk's batches against
    /// one dictionary).
    values: Option<(ArrayRef, Rows)>,
    /// Group of each of those values, [`UNRESOLVED`] until a row's code points to it: a
    /// dictionary can hold values no row uses (a filter keeps the whole dictionary), and those
    /// must not become groups.
    value_groups: Vec<usize>,
    /// The null key's group, once a row had one.
    null_group: Option<usize>,
}

/// The group of the key `row`, adding it to `rows` and `index` when it is new.
fn intern(index: &mut HashMap<Box<[u8]>, usize>, rows: &mut Rows, row: Row<'_>) -> usize {
    let bytes = row.data();
    if let Some(&group) = index.get(bytes) {
        return group;
    }
    let group = rows.num_rows();
    rows.push(row);
    index.insert(bytes.into(), group);
    group
}

/// A dictionary value no row has used yet.
const UNRESOLVED: usize = usize::MAX;

impl Groups {
    fn new(group_type: &DataType) -> Result<Groups> {
        let DataType::Dictionary(_, value_type) = group_type else {
            return Err(internal_datafusion_err!(
                "dictionary aggregation over {group_type}"
            ));
        };
        let converter = RowConverter::new(vec![SortField::new(value_type.as_ref().clone())])?;
        let rows = converter.empty_rows(0, 0);
        Ok(Groups {
            converter,
            index: HashMap::new(),
            rows,
            values: None,
            value_groups: Vec::new(),
            null_group: None,
        })
    }

    fn len(&self) -> usize {
        self.rows.num_rows()
    }

    /// Makes `values` the dictionary whose codes [`Groups::resolve`] resolves.
    fn use_values(&mut self, values: &ArrayRef) -> Result<()> {
        if self
            .values
            .as_ref()
            .is_some_and(|(cached, _)| Arc::ptr_eq(cached, values))
        {
            return Ok(());
        }
        let value_rows = self.converter.convert_columns(&[Arc::clone(values)])?;
        self.value_groups.clear();
        self.value_groups.resize(values.len(), UNRESOLVED);
        self.values = Some((Arc::clone(values), value_rows));
        Ok(())
    }

    /// Gives dictionary value `code` of the current values its group (interning it) unless it
    /// has one; afterwards `value_groups[code]` holds it.
    #[inline]
    fn resolve(&mut self, code: usize) -> Result<()> {
        match self.value_groups.get(code) {
            Some(&group) if group != UNRESOLVED => Ok(()),
            Some(_) => self.intern_value(code),
            None => Err(internal_datafusion_err!(
                "dictionary code {code} out of range"
            )),
        }
    }

    fn intern_value(&mut self, code: usize) -> Result<()> {
        let Some((_, value_rows)) = &self.values else {
            return Err(internal_datafusion_err!("dictionary values not set"));
        };
        let group = intern(&mut self.index, &mut self.rows, value_rows.row(code));
        self.value_groups[code] = group;
        Ok(())
    }

    /// The group of a null key (keys can be null while every dictionary value is not); its
    /// row is built once per partition.
    fn null_group(&mut self, value_type: &DataType) -> Result<usize> {
        if let Some(group) = self.null_group {
            return Ok(group);
        }
        let null = datafusion::arrow::array::new_null_array(value_type, 1);
        let rows = self.converter.convert_columns(&[null])?;
        let group = intern(&mut self.index, &mut self.rows, rows.row(0));
        self.null_group = Some(group);
        Ok(group)
    }

    fn size(&self) -> usize {
        self.rows.size()
            + self.values.as_ref().map_or(0, |(_, rows)| rows.size())
            + self.index.capacity() * (size_of::<Box<[u8]>>() + size_of::<usize>())
            + self.value_groups.capacity() * size_of::<usize>()
    }
}

/// One partition's aggregation state.
struct GroupState {
    schema: SchemaRef,
    mode: AggregateMode,
    group_expr: Arc<dyn PhysicalExpr>,
    group_type: DataType,
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    groups: Groups,
    group_indices: Vec<usize>,
    reservation: MemoryReservation,
}

impl GroupState {
    fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let keys = self.group_expr.evaluate(batch)?.into_array(rows)?;
        let dict = keys
            .as_any_dictionary_opt()
            .ok_or_else(|| internal_datafusion_err!("group key is not a dictionary"))?;
        self.group_indices.clear();
        self.group_indices.reserve(rows);
        let value_type = dict.values().data_type();
        let nulls = dict.keys().logical_nulls().filter(|n| n.null_count() > 0);
        match nulls {
            // Every code null: the values array may even be empty.
            Some(nulls) if nulls.null_count() == rows => {
                let group = self.groups.null_group(value_type)?;
                self.group_indices.resize(rows, group);
            }
            Some(nulls) => {
                let null_group = self.groups.null_group(value_type)?;
                self.groups.use_values(dict.values())?;
                let codes = dict.normalized_keys();
                for (&code, valid) in codes.iter().zip(nulls.iter()) {
                    if valid {
                        self.groups.resolve(code)?;
                    }
                }
                let groups = &self.groups.value_groups;
                // Every code of a valid row was resolved above (`resolve` checks its range).
                self.group_indices.extend(
                    codes
                        .iter()
                        .zip(nulls.iter())
                        .map(|(&code, valid)| if valid { groups[code] } else { null_group }),
                );
            }
            None => {
                self.groups.use_values(dict.values())?;
                let codes = dict.normalized_keys();
                // Two passes: the first interns the values the codes use (rare work, a branch
                // per row), the second is a plain gather.
                for &code in &codes {
                    self.groups.resolve(code)?;
                }
                let groups = &self.groups.value_groups;
                self.group_indices
                    .extend(codes.iter().map(|&code| groups[code]));
            }
        }
        let total = self.groups.len();
        let values = evaluate_many(&self.arguments, batch)?;
        for ((acc, values), filter) in self.accumulators.iter_mut().zip(&values).zip(&self.filters)
        {
            let filter = match filter {
                Some(expr) => Some(expr.evaluate(batch)?.into_array(rows)?),
                None => None,
            };
            let filter: Option<&BooleanArray> = filter.as_ref().map(|f| f.as_boolean());
            acc.update_batch(values, &self.group_indices, filter, total)?;
        }
        let size = self.groups.size()
            + self.accumulators.iter().map(|a| a.size()).sum::<usize>()
            + self.group_indices.capacity() * size_of::<usize>();
        self.reservation.try_resize(size)
    }

    fn emit(&mut self) -> Result<Option<RecordBatch>> {
        if self.groups.len() == 0 {
            return Ok(None);
        }
        let values = self
            .groups
            .converter
            .convert_rows(self.groups.rows.iter())?;
        let value_array = values
            .into_iter()
            .next()
            .ok_or_else(|| internal_datafusion_err!("no group column"))?;
        let mut columns = vec![cast(&value_array, &self.group_type)?];
        for acc in &mut self.accumulators {
            if self.mode.output_mode() == AggregateOutputMode::Final {
                columns.push(acc.evaluate(EmitTo::All)?);
            } else {
                columns.extend(acc.state(EmitTo::All)?);
            }
        }
        self.reservation.free();
        Ok(Some(RecordBatch::try_new(
            Arc::clone(&self.schema),
            columns,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{DictionaryArray, Int8Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Int8Type, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    fn dict(keys: Vec<Option<i8>>, values: ArrayRef) -> ArrayRef {
        Arc::new(DictionaryArray::<Int8Type>::try_new(Int8Array::from(keys), values).unwrap())
    }

    /// Batches whose dictionaries differ, repeat (the same values array), contain a null value,
    /// are empty with all keys null, and have null codes: every case `update` distinguishes.
    fn table(schema: &SchemaRef) -> Vec<Vec<RecordBatch>> {
        let a_values: ArrayRef =
            Arc::new(StringArray::from(vec!["success", "failure", "challenge"]));
        let b_values: ArrayRef = Arc::new(StringArray::from(vec![
            Some("failure"),
            Some("timeout"),
            None,
        ]));
        let empty: ArrayRef = Arc::new(StringArray::from(Vec::<&str>::new()));
        let batch = |k: ArrayRef, v: Vec<Option<i64>>| {
            RecordBatch::try_new(Arc::clone(schema), vec![k, Arc::new(Int64Array::from(v))])
                .unwrap()
        };
        vec![
            vec![
                batch(
                    dict(
                        vec![Some(0), Some(1), Some(0), Some(2), None, Some(1)],
                        Arc::clone(&a_values),
                    ),
                    vec![Some(1), Some(20), Some(3), None, Some(5), Some(60)],
                ),
                batch(
                    dict(vec![Some(0), Some(1), Some(2), Some(0), Some(0)], b_values),
                    vec![Some(7), Some(8), Some(9), None, Some(11)],
                ),
            ],
            vec![
                batch(dict(vec![None, None], empty), vec![Some(12), None]),
                batch(
                    dict(vec![Some(2), Some(2), Some(1)], Arc::clone(&a_values)),
                    vec![Some(13), Some(14), Some(15)],
                ),
                batch(
                    dict(vec![Some(1), Some(0)], a_values),
                    vec![Some(16), Some(17)],
                ),
            ],
        ]
    }

    async fn run(with_rule: bool, partitions: usize, sql: &str) -> (String, String) {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "k",
                DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8)),
                true,
            ),
            Field::new("v", DataType::Int64, true),
        ]));
        let data = table(&schema);
        run_on(with_rule, partitions, schema, data, sql).await
    }

    async fn run_on(
        with_rule: bool,
        partitions: usize,
        schema: SchemaRef,
        data: Vec<Vec<RecordBatch>>,
        sql: &str,
    ) -> (String, String) {
        let config = SessionConfig::new().with_target_partitions(partitions);
        let mut builder = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features();
        if with_rule {
            builder = builder.with_physical_optimizer_rule(Arc::new(DictionaryAggregation));
        }
        let ctx = SessionContext::new_with_state(builder.build());
        let mem = MemTable::try_new(schema, data).unwrap();
        ctx.register_table("t", Arc::new(mem)).unwrap();
        let result = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let plan = ctx
            .sql(&format!("EXPLAIN {sql}"))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        (
            pretty_format_batches(&result).unwrap().to_string(),
            pretty_format_batches(&plan).unwrap().to_string(),
        )
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// Same result as DataFusion's own operator, in the two-phase (Partial → Final) plan of
    /// several partitions and the one-phase (Single) plan of one, and the rule did apply.
    #[test]
    fn same_results_as_datafusion() {
        let queries = [
            "SELECT k, count(*) AS n, count(v) AS c, sum(v) AS s, avg(v) AS a, min(v) AS lo, \
             max(v) AS hi FROM t GROUP BY k ORDER BY k NULLS FIRST",
            "SELECT k, count(*) FILTER (WHERE v > 10) AS big FROM t GROUP BY k ORDER BY k NULLS FIRST",
            "SELECT k, count(*) AS n FROM t WHERE v IS NOT NULL GROUP BY k HAVING count(*) > 1 \
             ORDER BY n DESC, k",
            "SELECT k FROM t GROUP BY k ORDER BY k NULLS LAST",
            // Filters keep the whole dictionary: values no remaining row uses are no groups.
            "SELECT k, count(*) AS n FROM t WHERE k <> 'failure' GROUP BY k ORDER BY k NULLS FIRST",
            "SELECT k, count(*) AS n, sum(v) AS s FROM t WHERE v > 10 GROUP BY k ORDER BY k NULLS FIRST",
            "SELECT nullif(k, 'success') AS k2, count(*) AS n FROM t GROUP BY nullif(k, 'success') \
             ORDER BY k2 NULLS FIRST",
        ];
        block_on(async {
            for partitions in [1, 2, 4] {
                for sql in queries {
                    let (expected, _) = run(false, partitions, sql).await;
                    let (actual, plan) = run(true, partitions, sql).await;
                    assert_eq!(actual, expected, "{sql} with {partitions} partitions");
                    assert!(plan.contains("DictionaryAggregateExec"), "{plan}");
                }
            }
        });
        // The null group holds the null codes, the null dictionary value and the all-null batch.
        let (text, _) = block_on(run(
            true,
            2,
            "SELECT k, count(*) AS n FROM t GROUP BY k ORDER BY k NULLS FIRST",
        ));
        let expected = [
            "+-----------+---+",
            "| k         | n |",
            "+-----------+---+",
            "|           | 4 |",
            "| challenge | 3 |",
            "| failure   | 7 |",
            "| success   | 3 |",
            "| timeout   | 1 |",
            "+-----------+---+",
        ]
        .join("\n");
        assert_eq!(text, expected);
    }

    /// Shapes the operator does not handle keep DataFusion's: grouping by a plain column, by
    /// two columns, and a limit pushed into the aggregation.
    #[test]
    fn other_shapes_are_left_alone() {
        block_on(async {
            for sql in [
                "SELECT v, count(*) FROM t GROUP BY v ORDER BY v",
                "SELECT k, v, count(*) FROM t GROUP BY k, v ORDER BY k, v",
                "SELECT k FROM t GROUP BY k LIMIT 2",
            ] {
                let (expected, _) = run(false, 2, sql).await;
                let (actual, plan) = run(true, 2, sql).await;
                assert!(!plan.contains("DictionaryAggregateExec"), "{sql}: {plan}");
                if !sql.contains("LIMIT") {
                    assert_eq!(actual, expected, "{sql}");
                }
            }
        });
    }

    /// Dictionaries of other value types (here integers, with 32-bit codes) take the same path:
    /// the row format and the cast back to the key type are not string-specific.
    #[test]
    fn numeric_dictionary_values() {
        use datafusion::arrow::array::Int32Array;
        use datafusion::arrow::datatypes::Int32Type;
        let key_type = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Int64));
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", key_type, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let batch = |codes: Vec<Option<i32>>, values: Vec<i64>, v: Vec<i64>| {
            let k = DictionaryArray::<Int32Type>::try_new(
                Int32Array::from(codes),
                Arc::new(Int64Array::from(values)),
            )
            .unwrap();
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(k), Arc::new(Int64Array::from(v))],
            )
            .unwrap()
        };
        let data = vec![
            vec![batch(
                vec![Some(0), Some(1), None],
                vec![443, 22],
                vec![1, 2, 3],
            )],
            vec![batch(
                vec![Some(1), Some(0), Some(1)],
                vec![22, 8443],
                vec![4, 5, 6],
            )],
        ];
        let sql = "SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k ORDER BY k NULLS FIRST";
        block_on(async {
            for partitions in [1, 2] {
                let (expected, _) =
                    run_on(false, partitions, Arc::clone(&schema), data.clone(), sql).await;
                let (actual, plan) =
                    run_on(true, partitions, Arc::clone(&schema), data.clone(), sql).await;
                assert_eq!(actual, expected);
                assert!(plan.contains("DictionaryAggregateExec"), "{plan}");
                assert!(actual.contains("| 22   | 2 | 7  |"), "{actual}");
            }
        });
    }
}
