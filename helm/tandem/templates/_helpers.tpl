{{- define "tandem.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tandem.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "tandem.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "tandem.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "tandem.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tandem.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tandem.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tandem.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tandem
{{- end }}

{{- define "tandem.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* Embedded: neither an existing Secret nor a database URL (one pod, SQLite, private Redis). */}}
{{- define "tandem.embedded" -}}
{{- if and (not .Values.secrets.existingSecret) (not .Values.secrets.databaseUrl) }}true{{ end }}
{{- end }}

{{- define "tandem.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "tandem.fullname" .)) }}
{{- end }}

{{/* Values that cannot work together, refused at render time. */}}
{{- define "tandem.validate" -}}
{{- $s := .Values.secrets }}
{{- if not $s.existingSecret }}
{{- if and $s.databaseUrl (not $s.redisUrl) }}
{{- fail "secrets.redisUrl is required with secrets.databaseUrl: workers run apart and meet the API on Redis" }}
{{- end }}
{{- if and $s.redisUrl (not $s.databaseUrl) }}
{{- fail "secrets.databaseUrl is required with secrets.redisUrl (without both, the chart runs the embedded default)" }}
{{- end }}
{{- if and $s.databaseUrl (not $s.secretKey) }}
{{- fail "secrets.secretKey is required with an external database: every pod must hold the same key (make one with `tandem secrets new-key`)" }}
{{- end }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.serviceMonitor.bearerTokenSecret.name) }}
{{- fail "serviceMonitor.bearerTokenSecret.name is required: /metrics needs a Tandem API token" }}
{{- end }}
{{- end }}

{{/* A secret's environment entry; `optional` for the bootstrap token. */}}
{{- define "tandem.secretEnv" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end }}

{{/* A setting as its variable's text: whole numbers in full (YAML numbers reach templates
as floats, which print 1000000 as 1e+06), lists as JSON. */}}
{{- define "tandem.settingValue" -}}
{{- if kindIs "slice" . }}{{ toJson . }}
{{- else if and (kindIs "float64" .) (eq . (floor .)) }}{{ int64 . }}
{{- else }}{{ toString . }}
{{- end }}
{{- end }}

{{/* The environment of every Tandem container: settings, then secrets, then the chart's own. */}}
{{- define "tandem.env" -}}
{{- range $name, $value := .Values.settings }}
- name: {{ printf "TANDEM_%s" (upper $name) }}
  value: {{ include "tandem.settingValue" $value | quote }}
{{- end }}
- name: TANDEM_HOST
  value: "0.0.0.0"
- name: TANDEM_PORT
  value: {{ .Values.api.port | quote }}
- name: TANDEM_WORKER_HEALTH_PORT
  value: {{ .Values.worker.healthPort | quote }}
- name: TANDEM_DATA_DIR
  value: /var/lib/tandem
{{- $secret := include "tandem.secretName" . }}
{{- $keys := .Values.secrets.keys }}
{{- $s := .Values.secrets }}
{{- if $s.existingSecret }}
{{ include "tandem.secretEnv" (dict "env" "TANDEM_DATABASE_URL" "secret" $secret "key" $keys.databaseUrl) }}
{{ include "tandem.secretEnv" (dict "env" "TANDEM_REDIS_URL" "secret" $secret "key" $keys.redisUrl) }}
{{ include "tandem.secretEnv" (dict "env" "TANDEM_SECRET_KEY" "secret" $secret "key" $keys.secretKey) }}
{{ include "tandem.secretEnv" (dict "env" "TANDEM_BOOTSTRAP_TOKEN" "secret" $secret "key" $keys.bootstrapToken "optional" true) }}
{{- else }}
{{- if $s.databaseUrl }}
{{ include "tandem.secretEnv" (dict "env" "TANDEM_DATABASE_URL" "secret" $secret "key" $keys.databaseUrl) }}
{{ include "tandem.secretEnv" (dict "env" "TANDEM_REDIS_URL" "secret" $secret "key" $keys.redisUrl) }}
{{- end }}
{{- if $s.secretKey }}
{{ include "tandem.secretEnv" (dict "env" "TANDEM_SECRET_KEY" "secret" $secret "key" $keys.secretKey) }}
{{- end }}
{{- if $s.bootstrapToken }}
{{ include "tandem.secretEnv" (dict "env" "TANDEM_BOOTSTRAP_TOKEN" "secret" $secret "key" $keys.bootstrapToken) }}
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The pod-level parts every Tandem pod shares. */}}
{{- define "tandem.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* Writable places on a read-only root filesystem: the data directory and /tmp. */}}
{{- define "tandem.volumes" -}}
volumes:
  - name: data
    emptyDir: {}
  - name: tmp
    emptyDir: {}
{{- end }}

{{- define "tandem.volumeMounts" -}}
volumeMounts:
  - name: data
    mountPath: /var/lib/tandem
  - name: tmp
    mountPath: /tmp
{{- end }}
