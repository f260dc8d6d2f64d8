{{/* Names ------------------------------------------------------------------ */}}

{{- define "recast.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "recast.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "recast.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels: include "recast.labels" (dict "ctx" $ "component" "gateway") */}}
{{- define "recast.selectorLabels" -}}
app.kubernetes.io/name: {{ include "recast.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "recast.labels" -}}
helm.sh/chart: {{ include "recast.chart" .ctx }}
{{ include "recast.selectorLabels" . }}
app.kubernetes.io/part-of: recast
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end -}}

{{- define "recast.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "recast.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Images ----------------------------------------------------------------- */}}

{{- define "recast.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "recast.trainImage" -}}
{{- printf "%s:%s" .Values.trainImage.repository (default .Chart.AppVersion .Values.trainImage.tag) -}}
{{- end -}}

{{/* Addresses -------------------------------------------------------------- */}}

{{- define "recast.tritonHost" -}}
{{- printf "%s-triton" (include "recast.fullname" .) -}}
{{- end -}}

{{- define "recast.kafkaCluster" -}}
{{- default (include "recast.fullname" .) .Values.kafka.strimzi.clusterName -}}
{{- end -}}

{{- define "recast.kafkaBootstrap" -}}
{{- if eq .Values.kafka.mode "strimzi" -}}
{{- printf "%s-kafka-bootstrap:9092" (include "recast.kafkaCluster" .) -}}
{{- else -}}
{{- required "kafka.externalBootstrapServers is required when kafka.mode=external" .Values.kafka.externalBootstrapServers -}}
{{- end -}}
{{- end -}}

{{- define "recast.redisHost" -}}
{{- if .Values.redis.enabled -}}
{{- printf "%s-redis" (include "recast.fullname" .) -}}
{{- else -}}
{{- required "redis.external.host is required when redis.enabled=false" .Values.redis.external.host -}}
{{- end -}}
{{- end -}}

{{- define "recast.redisPort" -}}
{{- if .Values.redis.enabled -}}{{ .Values.redis.port }}{{- else -}}{{ .Values.redis.external.port }}{{- end -}}
{{- end -}}

{{- define "recast.feastRegistryPath" -}}
{{- default (printf "%s/data/feast_repo/registry.db" .Values.home) .Values.feast.registry.path -}}
{{- end -}}

{{- define "recast.sharedClaim" -}}
{{- default (printf "%s-shared" (include "recast.fullname" .)) .Values.persistence.existingClaim -}}
{{- end -}}

{{/* Where the model repository sits before the TensorRT build (the build writes modelRepository.mountPath). */}}
{{- define "recast.modelSourcePath" -}}
{{- if eq .Values.triton.backend "tensorrt" -}}/models-onnx{{- else -}}{{ .Values.modelRepository.mountPath }}{{- end -}}
{{- end -}}

{{/* Monitoring -------------------------------------------------------------- */}}

{{- define "recast.serviceMonitors" -}}
{{- if and .Values.metrics.serviceMonitor.enabled (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor") -}}true{{- end -}}
{{- end -}}

{{/* prometheus.io annotations when no ServiceMonitor is rendered: (dict "ctx" $ "port" 8002 "path" "/metrics") */}}
{{- define "recast.scrapeAnnotations" -}}
{{- if not (include "recast.serviceMonitors" .ctx) -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: {{ .path | quote }}
{{- end }}
{{- end -}}

{{/* Security ---------------------------------------------------------------- */}}

{{/* include "recast.podSecurityContext" (dict "ctx" $ "override" .Values.triton.podSecurityContext) */}}
{{- define "recast.podSecurityContext" -}}
{{- $base := deepCopy .ctx.Values.podSecurityContext -}}
{{- toYaml (mustMergeOverwrite $base (default (dict) .override)) -}}
{{- end -}}

{{- define "recast.securityContext" -}}
{{- toYaml .Values.securityContext -}}
{{- end -}}

{{/* Environment of every recast container (RECAST_<SECTION>__<FIELD>, see recast/settings.py). */}}
{{- define "recast.env" -}}
- name: RECAST_HOME
  value: {{ .Values.home | quote }}
- name: RECAST_CONFIG
  value: /etc/recast/config/recast.yaml
- name: HOME
  value: /tmp
- name: RECAST_KAFKA__BOOTSTRAP_SERVERS
  value: {{ include "recast.kafkaBootstrap" . | quote }}
- name: RECAST_KAFKA__LOCAL_BROKER
  value: "false"
{{- range $key := list "events" "exposures" "outcomes" "deadLetter" }}
- name: RECAST_KAFKA__{{ $key | snakecase | upper }}_TOPIC
  value: {{ (index $.Values.kafka.topics $key).name | quote }}
{{- end }}
- name: RECAST_KAFKA__PARTITIONS
  value: {{ .Values.kafka.topics.events.partitions | quote }}
- name: RECAST_KAFKA__DEAD_LETTER_PARTITIONS
  value: {{ .Values.kafka.topics.deadLetter.partitions | quote }}
- name: RECAST_KAFKA__REPLICATION_FACTOR
  value: {{ .Values.kafka.topics.events.replicas | quote }}
- name: RECAST_KAFKA__SESSION_TIMEOUT_MS
  value: {{ .Values.kafka.client.sessionTimeoutMs | quote }}
- name: RECAST_KAFKA__HEARTBEAT_INTERVAL_MS
  value: {{ .Values.kafka.client.heartbeatIntervalMs | quote }}
- name: RECAST_KAFKA__MAX_POLL_INTERVAL_MS
  value: {{ .Values.kafka.client.maxPollIntervalMs | quote }}
- name: RECAST_KAFKA__REQUEST_TIMEOUT_MS
  value: {{ .Values.kafka.client.requestTimeoutMs | quote }}
- name: RECAST_FEAST__PROJECT
  value: {{ .Values.feast.project | quote }}
{{- if .Values.redis.auth.existingSecret }}
- name: FEAST_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.auth.existingSecret }}
      key: {{ .Values.redis.auth.passwordKey }}
{{- end }}
{{- end -}}

{{/* Env + mounts of containers that read the Feast online store (gateway, stream, forecast). */}}
{{- define "recast.feastEnv" -}}
- name: RECAST_FEAST__REPO_DIR
  value: {{ .Values.feast.repoDir | quote }}
- name: RECAST_FEAST__REGISTRY_PATH
  value: {{ include "recast.feastRegistryPath" . | quote }}
{{- end -}}

{{- define "recast.feastMounts" -}}
- name: feast
  mountPath: {{ .Values.feast.repoDir }}
  readOnly: true
{{- if and (eq .Values.feast.registry.registryType "file") (not .Values.feast.registry.path) }}
- name: shared
  mountPath: {{ printf "%s/data/feast_repo" .Values.home }}
  subPath: data/feast_repo
  readOnly: true
{{- end }}
{{- end -}}

{{- define "recast.feastNeedsShared" -}}
{{- if and (eq .Values.feast.registry.registryType "file") (not .Values.feast.registry.path) -}}true{{- end -}}
{{- end -}}

{{/* Mounts every recast container has: writable /tmp and home, the recast.yaml ConfigMap. */}}
{{- define "recast.baseMounts" -}}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: {{ .Values.home }}
- name: config
  mountPath: /etc/recast/config
  readOnly: true
{{- end -}}

{{- define "recast.baseVolumes" -}}
- name: tmp
  emptyDir: {}
- name: home
  emptyDir: {}
- name: config
  configMap:
    name: {{ include "recast.fullname" . }}-config
{{- end -}}

{{/* The shared volume; pass readOnly=true for pods that only read it. */}}
{{- define "recast.sharedVolume" -}}
- name: shared
  persistentVolumeClaim:
    claimName: {{ include "recast.sharedClaim" .ctx }}
    {{- if .readOnly }}
    readOnly: true
    {{- end }}
{{- end -}}

{{- define "recast.feastVolume" -}}
- name: feast
  configMap:
    name: {{ include "recast.fullname" . }}-feast
{{- end -}}

{{/* Init container copying the model repository from object storage into the "model-source" volume. */}}
{{- define "recast.fetchModelsInitContainer" -}}
{{- $os := .Values.modelRepository.objectStorage -}}
- name: fetch-models
  image: {{ printf "%s:%s" $os.image.repository $os.image.tag | quote }}
  imagePullPolicy: {{ $os.image.pullPolicy }}
  args:
    - s3
    - sync
    - {{ required "modelRepository.objectStorage.uri is required when modelRepository.source=objectStorage" $os.uri | quote }}
    - {{ include "recast.modelSourcePath" . | quote }}
    - --only-show-errors
    {{- if $os.endpointUrl }}
    - --endpoint-url
    - {{ $os.endpointUrl | quote }}
    {{- end }}
  env:
    - name: HOME
      value: /tmp
  {{- if $os.credentialsSecret }}
  envFrom:
    - secretRef:
        name: {{ $os.credentialsSecret }}
  {{- end }}
  securityContext:
    {{- include "recast.securityContext" . | nindent 4 }}
  resources:
    {{- toYaml $os.resources | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    - name: model-source
      mountPath: {{ include "recast.modelSourcePath" . }}
{{- end -}}

{{/* The model repository as exported: a sub path of the shared volume, or an emptyDir filled at start. */}}
{{- define "recast.modelSourceVolume" -}}
{{- if ne .Values.modelRepository.source "pvc" -}}
- name: model-source
  emptyDir: {}
{{- end }}
{{- end -}}

{{- define "recast.modelSourceMount" -}}
{{- if eq .Values.modelRepository.source "pvc" -}}
- name: shared
  mountPath: {{ include "recast.modelSourcePath" . }}
  subPath: {{ .Values.modelRepository.subPath }}
  readOnly: true
{{- else -}}
- name: model-source
  mountPath: {{ include "recast.modelSourcePath" . }}
{{- end }}
{{- end -}}
