{{/*
Names and labels.
*/}}
{{- define "authwatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "authwatch.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "authwatch.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "authwatch.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "authwatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "authwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "authwatch.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "authwatch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: authwatch
{{- end }}

{{- define "authwatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "authwatch.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "authwatch.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The runtime layout of the image (Dockerfile) — one place, so the chart and the image agree;
tests/integration/helm.rs checks the Dockerfile against these paths.
*/}}
{{- define "authwatch.paths" -}}
{{- dict
  "binary" "/usr/local/bin/authwatch"
  "config" "/etc/authwatch/config.toml"
  "configDir" "/etc/authwatch"
  "rules" "/etc/authwatch/rules"
  "sql" "/etc/authwatch/sql"
  "geoip" "/usr/share/GeoIP"
  "state" "/var/lib/authwatch"
  "secrets" "/var/run/secrets/authwatch"
  | toJson }}
{{- end }}

{{/* Whether the Kafka protocol uses SASL / TLS. */}}
{{- define "authwatch.kafka.sasl" -}}
{{- if hasPrefix "sasl_" .Values.kafka.securityProtocol }}true{{ end }}
{{- end }}
{{- define "authwatch.kafka.tls" -}}
{{- if has .Values.kafka.securityProtocol (list "ssl" "sasl_ssl") }}true{{ end }}
{{- end }}

{{/*
Secrets mounted by reference: a list of {name, secret, items: [{key, path}]}, each mounted at
/var/run/secrets/authwatch/<name>. The config names the files; Secret values never enter a
rendered manifest.
*/}}
{{- define "authwatch.secretMounts" -}}
{{- $mounts := list }}
{{- if and (include "authwatch.kafka.sasl" .) .Values.kafka.sasl.existingSecret }}
{{- $mounts = append $mounts (dict "name" "kafka-sasl" "secret" .Values.kafka.sasl.existingSecret "items" (list (dict "key" .Values.kafka.sasl.propertiesKey "path" "client.properties"))) }}
{{- end }}
{{- if and (include "authwatch.kafka.tls" .) .Values.kafka.tls.existingSecret }}
{{- $items := list (dict "key" .Values.kafka.tls.caKey "path" "ca.crt") }}
{{- if and .Values.kafka.tls.certKey .Values.kafka.tls.keyKey }}
{{- $items = append $items (dict "key" .Values.kafka.tls.certKey "path" "tls.crt") }}
{{- $items = append $items (dict "key" .Values.kafka.tls.keyKey "path" "tls.key") }}
{{- end }}
{{- $mounts = append $mounts (dict "name" "kafka-tls" "secret" .Values.kafka.tls.existingSecret "items" $items) }}
{{- end }}
{{- if .Values.serve.enabled }}
{{- $mounts = append $mounts (dict "name" "pgwire" "secret" .Values.serve.existingSecret "items" (list (dict "key" .Values.serve.passwordKey "path" "password"))) }}
{{- if .Values.serve.tlsSecret }}
{{- $mounts = append $mounts (dict "name" "pgwire-tls" "secret" .Values.serve.tlsSecret "items" (list (dict "key" "tls.crt" "path" "tls.crt") (dict "key" "tls.key" "path" "tls.key"))) }}
{{- end }}
{{- end }}
{{- if .Values.respond.enabled }}
{{- range .Values.respond.credentials }}
{{- $mounts = append $mounts (dict "name" .name "secret" .existingSecret "items" (list (dict "key" .key "path" .key))) }}
{{- end }}
{{- end }}
{{- toJson $mounts }}
{{- end }}

{{/*
Sets a dotted key ("a.b.c") in a nested dict, creating the intermediate tables.
*/}}
{{- define "authwatch.setDotted" -}}
{{- $d := .dict }}
{{- $parts := splitList "." .key }}
{{- range (initial $parts) }}
{{- if not (kindIs "map" (get $d .)) }}
{{- $_ := set $d . (dict) }}
{{- end }}
{{- $d = get $d . }}
{{- end }}
{{- $_ := set $d (last $parts) .value }}
{{- end }}

{{/*
authwatch's configuration as a dict: the keys the chart derives from its values (paths in the
container, mounted secret files, Kafka and checkpoint settings), then .Values.config merged over it.
*/}}
{{- define "authwatch.configDict" -}}
{{- $p := include "authwatch.paths" . | fromJson }}
{{- $s := $p.secrets }}
{{- $props := deepCopy .Values.kafka.properties }}
{{- /* A topic's partition count is the chart's (the replica check), not authwatch's. */}}
{{- $topics := list }}
{{- range .Values.kafka.topics }}
{{- $topics = append $topics (omit . "partitions") }}
{{- end }}
{{- $_ := set $props "security.protocol" .Values.kafka.securityProtocol }}
{{- $kafka := dict
  "brokers" (join "," .Values.kafka.brokers)
  "group_id" .Values.kafka.groupId
  "topics" $topics
  "alert_topic" .Values.kafka.alertTopic
  "dead_letter_topic" .Values.kafka.deadLetterTopic
  "audit_topic" .Values.kafka.auditTopic
  "properties" $props }}
{{- if .Values.kafka.enrichedTopic }}
{{- $_ := set $kafka "enriched_topic" .Values.kafka.enrichedTopic }}
{{- end }}
{{- if .Values.kafka.repartition.enabled }}
{{- $_ := set $kafka "repartition" (dict "enabled" true "partitions" (int .Values.kafka.repartition.partitions)) }}
{{- end }}
{{- if include "authwatch.kafka.sasl" . }}
{{- $_ := set $props "sasl.mechanism" .Values.kafka.sasl.mechanism }}
{{- $_ := set $kafka "properties_file" (printf "%s/kafka-sasl/client.properties" $s) }}
{{- end }}
{{- if and (include "authwatch.kafka.tls" .) .Values.kafka.tls.existingSecret }}
{{- $_ := set $props "ssl.ca.location" (printf "%s/kafka-tls/ca.crt" $s) }}
{{- if and .Values.kafka.tls.certKey .Values.kafka.tls.keyKey }}
{{- $_ := set $props "ssl.certificate.location" (printf "%s/kafka-tls/tls.crt" $s) }}
{{- $_ := set $props "ssl.key.location" (printf "%s/kafka-tls/tls.key" $s) }}
{{- end }}
{{- end }}
{{- $checkpoint := dict }}
{{- if .Values.checkpoint.interval }}
{{- $_ := set $checkpoint "interval" .Values.checkpoint.interval }}
{{- end }}
{{- if .Values.checkpoint.snapshotInterval }}
{{- $_ := set $checkpoint "snapshot_interval" .Values.checkpoint.snapshotInterval }}
{{- end }}
{{- if eq .Values.checkpoint.storage "object" }}
{{- $_ := set $checkpoint "url" .Values.checkpoint.object.url }}
{{- else }}
{{- $_ := set $checkpoint "dir" (printf "%s/checkpoints" $p.state) }}
{{- end }}
{{- $telemetry := dict "listen" (printf "0.0.0.0:%d" (int .Values.telemetry.port)) "log_format" .Values.telemetry.logFormat }}
{{- if .Values.telemetry.otlpEndpoint }}
{{- $_ := set $telemetry "otlp_endpoint" .Values.telemetry.otlpEndpoint }}
{{- end }}
{{- $cfg := dict
  "kafka" $kafka
  "checkpoint" $checkpoint
  "telemetry" $telemetry
  "detect" (dict "rules" $p.rules)
  "sql" (dict "enabled" .Values.sql.enabled "dir" $p.sql) }}
{{- if .Values.serve.enabled }}
{{- $serve := dict "enabled" true "listen" (printf "0.0.0.0:%d" (int .Values.serve.port)) "user" .Values.serve.user "password_file" (printf "%s/pgwire/password" $s) }}
{{- if .Values.serve.tlsSecret }}
{{- $_ := set $serve "tls_cert" (printf "%s/pgwire-tls/tls.crt" $s) }}
{{- $_ := set $serve "tls_key" (printf "%s/pgwire-tls/tls.key" $s) }}
{{- end }}
{{- $_ := set $cfg "serve" $serve }}
{{- end }}
{{- if .Values.archive.url }}
{{- $_ := set $cfg "archive" (dict "enabled" true "location" .Values.archive.url) }}
{{- end }}
{{- if .Values.respond.enabled }}
{{- $_ := set $cfg "respond" (dict "enabled" true "mode" .Values.respond.mode) }}
{{- end }}
{{- if .Values.geoip.enabled }}
{{- $geo := dict "city_db" (printf "%s/%s" $p.geoip .Values.geoip.cityDb) "asn_db" (printf "%s/%s" $p.geoip .Values.geoip.asnDb) }}
{{- if .Values.geoip.anonymousDb }}
{{- $_ := set $geo "anonymous_db" (printf "%s/%s" $p.geoip .Values.geoip.anonymousDb) }}
{{- end }}
{{- $_ := set $cfg "enrich" (dict "geo" $geo) }}
{{- end }}
{{- /* Normalize workers and detect threads follow the CPU request: without a CPU limit,
authwatch's "one per core" would count the node's cores, not the pod's share. */}}
{{- $cpu := toString (dig "requests" "cpu" "1" .Values.resources) }}
{{- $millis := hasSuffix "m" $cpu | ternary (trimSuffix "m" $cpu | float64) (mulf (float64 $cpu) 1000) }}
{{- $cores := max 1 (ceil (divf $millis 1000)) | int }}
{{- $_ := set $cfg "runtime" (dict "workers" $cores "detect_threads" $cores) }}
{{- $cfg = mustMergeOverwrite $cfg (deepCopy .Values.config) }}
{{- if .Values.respond.enabled }}
{{- range .Values.respond.credentials }}
{{- include "authwatch.setDotted" (dict "dict" $cfg "key" .configKey "value" (dict "file" (printf "%s/%s/%s" $s .name .key))) }}
{{- end }}
{{- end }}
{{- toJson $cfg }}
{{- end }}

{{/*
TOML rendering of a dict: a table's plain keys first, then its sub-tables, then its arrays of
tables (TOML requires that order). Keys are sorted so the output, and so the checksum, is stable.
Null values are left out.
*/}}
{{- define "authwatch.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{- define "authwatch.toml.isTableArray" -}}
{{- if and (kindIs "slice" .) (gt (len .) 0) }}
{{- $all := true }}
{{- range . }}{{ if not (kindIs "map" .) }}{{ $all = false }}{{ end }}{{ end }}
{{- if $all }}true{{ end }}
{{- end }}
{{- end }}

{{- define "authwatch.toml.table" -}}
{{- $table := .table }}
{{- $path := .path }}
{{- range $k := keys $table | sortAlpha }}
{{- $v := get $table $k }}
{{- if not (or (kindIs "invalid" $v) (kindIs "map" $v) (include "authwatch.toml.isTableArray" $v)) }}
{{- if kindIs "slice" $v }}
{{- range $v }}{{ if kindIs "map" . }}{{ fail (printf "config: %s.%s mixes tables and plain values in one array" $path $k) }}{{ end }}{{ end }}
{{- end }}
{{ include "authwatch.toml.key" $k }} = {{ toJson $v }}
{{- end }}
{{- end }}
{{- range $k := keys $table | sortAlpha }}
{{- $v := get $table $k }}
{{- $sub := include "authwatch.toml.key" $k }}
{{- if $path }}{{ $sub = printf "%s.%s" $path $sub }}{{ end }}
{{- if kindIs "map" $v }}

[{{ $sub }}]
{{- include "authwatch.toml.table" (dict "table" $v "path" $sub) }}
{{- else if include "authwatch.toml.isTableArray" $v }}
{{- range $v }}

[[{{ $sub }}]]
{{- include "authwatch.toml.table" (dict "table" . "path" $sub) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "authwatch.configToml" -}}
# Rendered by the authwatch Helm chart from its values; do not edit in the cluster.
{{- include "authwatch.toml.table" (dict "table" (include "authwatch.configDict" . | fromJson) "path" "") }}
{{ end }}
