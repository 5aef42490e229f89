{{/*
Cross-field checks that values.schema.json cannot express (it validates each value alone).
Each failure names the values to change.
*/}}
{{- define "authwatch.validate" -}}
{{- $cfg := include "authwatch.configDict" . | fromJson }}
{{- $ceiling := include "authwatch.validate.replicaCeiling" (dict "Values" .Values "cfg" $cfg) | fromJson }}
{{- $partitions := int $ceiling.partitions }}
{{- if .Values.keda.enabled }}
{{- if gt (int .Values.keda.maxReplicas) $partitions }}
{{- fail (printf "keda.maxReplicas (%d) exceeds %d, the most pods that all get a partition (%s): pods beyond it would get none, never become ready, and block rollouts and node drains (the PodDisruptionBudget counts them as unavailable); add partitions first" (int .Values.keda.maxReplicas) $partitions $ceiling.why) }}
{{- end }}
{{- if eq .Values.checkpoint.storage "local" }}
{{- fail "keda.enabled needs checkpoint.storage=shared (or object): scaling moves partitions between pods, and a partition's state must move with it (a pod's own volume stays behind)" }}
{{- end }}
{{- if and (eq .Values.keda.trigger "kafka") (include "authwatch.kafka.sasl" .) (or (not .Values.kafka.sasl.usernameKey) (not .Values.kafka.sasl.passwordKey)) }}
{{- fail "keda.trigger=kafka with SASL: set kafka.sasl.usernameKey and kafka.sasl.passwordKey (keys of kafka.sasl.existingSecret with the bare credentials, for KEDA)" }}
{{- end }}
{{- if gt (int .Values.keda.minReplicas) (int .Values.keda.maxReplicas) }}
{{- fail (printf "keda.minReplicas (%d) exceeds keda.maxReplicas (%d)" (int .Values.keda.minReplicas) (int .Values.keda.maxReplicas)) }}
{{- end }}
{{- if and (eq .Values.keda.trigger "prometheus") (eq (int .Values.keda.minReplicas) 0) }}
{{- fail "keda.trigger=prometheus with keda.minReplicas=0: scaled to zero, no pod exports authwatch_consumer_lag, so KEDA would never see lag again and never scale back up; set keda.minReplicas to 1 or more, or use keda.trigger=kafka (it reads the lag from the brokers, with every pod down)" }}
{{- end }}
{{- else if gt (int .Values.replicaCount) $partitions }}
{{- fail (printf "replicaCount (%d) exceeds %d, the most pods that all get a partition (%s): pods beyond it would get none, never become ready, and block rollouts and node drains (the PodDisruptionBudget counts them as unavailable); add partitions first" (int .Values.replicaCount) $partitions $ceiling.why) }}
{{- else if and (gt (int .Values.replicaCount) 1) (eq .Values.checkpoint.storage "local") }}
{{- fail (printf "replicaCount (%d) with checkpoint.storage=local: each pod would keep its partitions' state on its own volume, and a partition that moves to another pod would lose it; use checkpoint.storage=shared (a ReadWriteMany volume) or object (a bucket)" (int .Values.replicaCount)) }}
{{- end }}
{{- $respond := dig "respond" dict $cfg }}
{{- $mode := dig "mode" "dry_run" $respond }}
{{- if and (ne $mode "dry_run") (eq (dig "target" "none" $respond) "none") }}
{{- fail (printf "the responder's mode is %s (respond.mode or config.respond.mode) but config.respond.target is \"none\" (its default): authwatch refuses to start so; set config.respond.target (okta, graph, keycloak or webhook) and its section, or respond.mode=dry_run" $mode) }}
{{- end }}
{{- /* The responder's limits are token buckets in each process: N pods act on N times them. */}}
{{- $pods := ternary (int .Values.keda.maxReplicas) (int .Values.replicaCount) .Values.keda.enabled }}
{{- if and (dig "enabled" false $respond) (eq $mode "automatic") (gt $pods 1) (not .Values.respond.perPodLimitsAcknowledged) }}
{{- fail (printf "the responder acts automatically in up to %d pods (%s): its rate limits are per pod, so up to %d times config.respond.limits could be acted on per period; run one pod (replicaCount=1, keda.enabled=false), or divide config.respond.limits by %d and set respond.perPodLimitsAcknowledged=true" $pods (ternary "keda.maxReplicas" "replicaCount" .Values.keda.enabled) $pods $pods) }}
{{- end }}
{{- /* Pending approvals live in respond.state_dir (the responder's incidents and spent tokens are in the checkpoint store): they must outlive the pod. */}}
{{- if and (dig "enabled" false $respond) (eq $mode "approval") (ne .Values.checkpoint.storage "local") }}
{{- $stateDir := printf "%s/" (trimSuffix "/" (dig "state_dir" "/var/lib/authwatch/respond" $respond)) }}
{{- $kept := and (eq .Values.checkpoint.storage "shared") (hasPrefix "/var/lib/authwatch/checkpoints/" $stateDir) }}
{{- range .Values.extraVolumeMounts }}
{{- if hasPrefix (printf "%s/" (trimSuffix "/" .mountPath)) $stateDir }}
{{- $kept = true }}
{{- end }}
{{- end }}
{{- if not $kept }}
{{- fail (printf "the responder's mode is approval but config.respond.state_dir (%s), where actions wait for approval, is scratch space (an emptyDir) with checkpoint.storage=%s: a rescheduled pod would lose every pending approval; put config.respond.state_dir on a persistent volume (under /var/lib/authwatch/checkpoints/ with checkpoint.storage=shared, or a volume of extraVolumes/extraVolumeMounts)" (trimSuffix "/" $stateDir) .Values.checkpoint.storage) }}
{{- end }}
{{- end }}
{{- if and (eq .Values.checkpoint.storage "object") (not .Values.checkpoint.object.url) }}
{{- fail "checkpoint.storage=object needs checkpoint.object.url (s3://bucket/prefix, gs://bucket/prefix or az://container/prefix)" }}
{{- end }}
{{- if and (include "authwatch.kafka.sasl" .) (not .Values.kafka.sasl.existingSecret) }}
{{- fail (printf "kafka.securityProtocol is %s: set kafka.sasl.existingSecret to the Secret holding the SASL username and password" .Values.kafka.securityProtocol) }}
{{- end }}
{{- if and .Values.kafka.tls.existingSecret (not (include "authwatch.kafka.tls" .)) }}
{{- fail (printf "kafka.tls.existingSecret is set but kafka.securityProtocol is %s: use ssl or sasl_ssl" .Values.kafka.securityProtocol) }}
{{- end }}
{{- if ne (empty .Values.kafka.tls.certKey) (empty .Values.kafka.tls.keyKey) }}
{{- fail "kafka.tls.certKey and kafka.tls.keyKey go together (mutual TLS needs both the certificate and its key)" }}
{{- end }}
{{- if and .Values.serve.enabled (not .Values.serve.existingSecret) }}
{{- fail "serve.enabled: set serve.existingSecret to the Secret holding the SQL endpoint's password (or serve.enabled=false)" }}
{{- end }}
{{- if and .Values.geoip.enabled (not .Values.geoip.volume) (not .Values.geoip.updater.enabled) }}
{{- fail "geoip.enabled: set geoip.volume to the volume holding the .mmdb files, or enable geoip.updater" }}
{{- end }}
{{- if and .Values.geoip.enabled .Values.geoip.updater.enabled (not .Values.geoip.updater.existingSecret) }}
{{- fail "geoip.updater.enabled: set geoip.updater.existingSecret (GEOIPUPDATE_ACCOUNT_ID, GEOIPUPDATE_LICENSE_KEY)" }}
{{- end }}
{{- $names := list }}
{{- range (include "authwatch.secretMounts" . | fromJsonArray) }}
{{- if has .name $names }}
{{- fail (printf "two secrets would be mounted at /var/run/secrets/authwatch/%s: give respond.credentials entries distinct names (kafka-sasl, kafka-tls, pgwire, pgwire-tls are taken)" .name) }}
{{- end }}
{{- $names = append $names .name }}
{{- end }}
{{- include "authwatch.validate.secrets" (dict "value" (deepCopy .Values.config) "path" "config") }}
{{- range $k, $_ := (dig "kafka" "properties" dict $cfg) }}
{{- /* The schema's pattern for kafka.properties, plus ssl.key.pem (a private key in PEM). */}}
{{- if regexMatch "(?i)(password|secret|\\.key$|^ssl\\.key\\.pem$)" $k }}
{{- fail (printf "kafka.properties %q (set in config.kafka.properties) looks like a secret, and the config is rendered into a ConfigMap: put it in the properties file of kafka.sasl.existingSecret (a Secret, mounted as kafka.properties_file)" $k) }}
{{- end }}
{{- end }}
{{- include "authwatch.validate.gracePeriod" (dict "Values" .Values "cfg" $cfg) }}
{{- end }}

{{/*
The most pods of which each gets a partition, as {"partitions": N, "why": "…"}. librdkafka's
default assignment strategy (range,roundrobin: the range assignor, which authwatch does not
change) divides each topic among the members on its own, always starting from the same members:
with two topics of 6 partitions, the first 6 pods get 2 each and pods 7-12 none. So the ceiling is
the largest single topic's count, not the sum; with partition.assignment.strategy=roundrobin in
kafka.properties it is the sum. With repartitioning, a pod that holds only partitions of the
internal topic (the detect stage) is busy and ready too, so the internal topic's count counts.
*/}}
{{- define "authwatch.validate.replicaCeiling" -}}
{{- if hasKey .Values.kafka "partitions" }}
{{- fail "kafka.partitions (the total over all input topics) is gone: the range assignor divides each topic on its own, so the useful replica count is capped by the largest topic, not the total. Set each topic's own count as kafka.topics[].partitions and remove kafka.partitions" }}
{{- end }}
{{- $largest := 0 }}
{{- $largestName := "" }}
{{- $total := 0 }}
{{- range $i, $t := .Values.kafka.topics }}
{{- if not $t.partitions }}
{{- fail (printf "kafka.topics[%d] (%s) has no partitions: set the topic's partition count (kafka-topics.sh --describe --topic %s), which caps the useful replica count" $i $t.name $t.name) }}
{{- end }}
{{- $total = add $total (int $t.partitions) }}
{{- if gt (int $t.partitions) $largest }}
{{- $largest = int $t.partitions }}
{{- $largestName = $t.name }}
{{- end }}
{{- end }}
{{- $ceiling := $largest }}
{{- $why := printf "the largest input topic, %s, has %d partitions; the range assignor divides each topic on its own, so the other topics add none" $largestName $largest }}
{{- if eq (len .Values.kafka.topics) 1 }}
{{- $why = printf "input topic %s has %d partitions" $largestName $largest }}
{{- end }}
{{- $strategy := get (dig "kafka" "properties" dict .cfg) "partition.assignment.strategy" | default "range" | toString | splitList "," | first | trim }}
{{- if eq $strategy "roundrobin" }}
{{- $ceiling = $total }}
{{- $why = printf "the input topics have %d partitions together, divided round-robin (partition.assignment.strategy)" $total }}
{{- end }}
{{- $repartition := dig "kafka" "repartition" dict .cfg }}
{{- if and (dig "enabled" false $repartition) (gt (int (dig "partitions" 0 $repartition)) $ceiling) }}
{{- $ceiling = int (dig "partitions" 0 $repartition) }}
{{- $why = printf "the internal topic of kafka.repartition has %d partitions" $ceiling }}
{{- end }}
{{- dict "partitions" $ceiling "why" $why | toJson }}
{{- end }}

{{/*
Secrets in clear under config: the config is rendered into a ConfigMap (readable by whoever may
read the namespace's ConfigMaps, and kept in Helm's release history), and authwatch would refuse
it anyway. A key named like a secret (the SecretRef fields of crates/pipeline/src/config.rs:
respond.okta.token, respond.graph.client_secret, respond.keycloak.client_secret and password,
respond.webhook.secret, respond.pager.secret; and a password under serve) must hold a reference,
{ file = "…" } or { env = "…" }, never a value.
*/}}
{{- define "authwatch.validate.secrets" -}}
{{- $path := .path }}
{{- if kindIs "map" .value }}
{{- range $k, $v := .value }}
{{- $at := printf "%s.%s" $path $k }}
{{- if has (lower $k) (list "password" "secret" "token" "client_secret") }}
{{- if not (kindIs "map" $v) }}
{{- if hasPrefix "config.serve." $at }}
{{- fail (printf "%s: a secret in clear would be rendered into the ConfigMap; the SQL endpoint's password comes from serve.existingSecret (mounted, named by password_file)" $at) }}
{{- else }}
{{- fail (printf "%s: a secret in clear would be rendered into the ConfigMap; give a reference instead: respond.credentials (mounts a key of an existing Secret and sets %s to { file = \"…\" }), or %s.env naming an environment variable filled from a Secret (env valueFrom.secretKeyRef, or envFrom)" $at (trimPrefix "config." $at) $at) }}
{{- end }}
{{- end }}
{{- range $rk, $_ := $v }}
{{- if not (has $rk (list "file" "env")) }}
{{- fail (printf "%s.%s: a secret reference takes only file or env (a path, or the name of an environment variable), never the secret" $at $rk) }}
{{- end }}
{{- end }}
{{- else }}
{{- include "authwatch.validate.secrets" (dict "value" $v "path" $at) }}
{{- end }}
{{- end }}
{{- else if kindIs "slice" .value }}
{{- range $i, $v := .value }}
{{- include "authwatch.validate.secrets" (dict "value" $v "path" (printf "%s[%d]" $path $i)) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A duration in authwatch's syntax (humantime: "500ms", "30s", "1m 30s"), in seconds.
*/}}
{{- define "authwatch.durationSeconds" -}}
{{- $units := dict "ns" 1e-9 "nsec" 1e-9 "us" 1e-6 "usec" 1e-6 "ms" 0.001 "msec" 0.001 "s" 1.0 "sec" 1.0 "second" 1.0 "seconds" 1.0 "m" 60.0 "min" 60.0 "minute" 60.0 "minutes" 60.0 "h" 3600.0 "hr" 3600.0 "hour" 3600.0 "hours" 3600.0 "d" 86400.0 "day" 86400.0 "days" 86400.0 }}
{{- $total := 0.0 }}
{{- range (regexFindAll "[0-9]+ ?[a-z]+" . -1) }}
{{- $n := regexFind "^[0-9]+" . }}
{{- $unit := trimPrefix " " (trimPrefix $n .) }}
{{- if not (hasKey $units $unit) }}
{{- fail (printf "checkpoint.interval: unknown unit %q in %q (ms, s, m, h)" $unit $) }}
{{- end }}
{{- $total = addf $total (mulf (float64 $n) (get $units $unit)) }}
{{- end }}
{{- $total }}
{{- end }}

{{/*
terminationGracePeriodSeconds against the longest graceful stop (docs/KAFKA.md, "Timeouts" and
"Stopping during a failure or recovery"): with the broker away, the pending commit waits out the
transaction timeout T = max(2 × checkpoint.interval + 10 s, 30 s), the abort of the open
transaction then takes up to max(T / 4, 2 s), and the audit producer's flush up to 10 s. A pod
killed sooner is cut off in the middle of that.
*/}}
{{- define "authwatch.validate.gracePeriod" -}}
{{- $text := dig "checkpoint" "interval" "" .cfg | toString }}
{{- $interval := 0.5 }}
{{- if $text }}
{{- $interval = include "authwatch.durationSeconds" $text | float64 }}
{{- end }}
{{- $txn := maxf (addf (mulf 2 $interval) 10) 30 }}
{{- $abort := maxf (divf $txn 4) 2 }}
{{- $stop := addf $txn $abort 10 | ceil | int }}
{{- $grace := int .Values.terminationGracePeriodSeconds }}
{{- if lt $grace $stop }}
{{- fail (printf "terminationGracePeriodSeconds (%d) is below the %d s a stop can take with checkpoint.interval %s: with the broker away, a stop waits out the transaction timeout max(2 × interval + 10 s, 30 s) = %v s for the pending commit, up to %v s for the abort and 10 s for the audit producer's flush (docs/KAFKA.md, \"Timeouts\"), and Kubernetes kills the pod when its grace period ends; set terminationGracePeriodSeconds to at least %d (with room for the consumer to leave the group), or shorten checkpoint.interval" $grace $stop (default "500ms" $text) $txn $abort $stop) }}
{{- end }}
{{- end }}
