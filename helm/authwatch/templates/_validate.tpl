{{/*
Cross-field checks that values.schema.json cannot express (it validates each value alone).
Each failure names the values to change.
*/}}
{{- define "authwatch.validate" -}}
{{- $partitions := int .Values.kafka.partitions }}
{{- if .Values.keda.enabled }}
{{- if gt (int .Values.keda.maxReplicas) $partitions }}
{{- fail (printf "keda.maxReplicas (%d) exceeds kafka.partitions (%d): a consumer group never gives a partition to two members, so pods beyond the partition count would sit idle" (int .Values.keda.maxReplicas) $partitions) }}
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
{{- fail (printf "replicaCount (%d) exceeds kafka.partitions (%d): a consumer group never gives a partition to two members, so pods beyond the partition count would sit idle; add partitions to the input topics first" (int .Values.replicaCount) $partitions) }}
{{- else if and (gt (int .Values.replicaCount) 1) (eq .Values.checkpoint.storage "local") }}
{{- fail (printf "replicaCount (%d) with checkpoint.storage=local: each pod would keep its partitions' state on its own volume, and a partition that moves to another pod would lose it; use checkpoint.storage=shared (a ReadWriteMany volume) or object (a bucket)" (int .Values.replicaCount)) }}
{{- end }}
{{- $respond := dig "respond" dict (include "authwatch.configDict" . | fromJson) }}
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
{{- end }}
