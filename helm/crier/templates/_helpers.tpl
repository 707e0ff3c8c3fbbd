{{/*
Chart name, truncated to the 63 characters Kubernetes allows in a name.
*/}}
{{- define "crier.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, plus the chart name unless the release name
already contains it.
*/}}
{{- define "crier.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "crier.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "crier.labels" -}}
helm.sh/chart: {{ include "crier.chart" . }}
{{ include "crier.selectorLabels" . }}
app.kubernetes.io/version: {{ (.Values.image.tag | default .Chart.AppVersion) | toString | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: server
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels that select the pods (never change them on upgrade).
*/}}
{{- define "crier.selectorLabels" -}}
app.kubernetes.io/name: {{ include "crier.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "crier.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "crier.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "crier.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion | toString }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Redis: "true" when a Redis URL is configured (in values or in an existing Secret).
*/}}
{{- define "crier.redisEnabled" -}}
{{- if or .Values.redis.existingSecret .Values.redis.url }}true{{ end }}
{{- end }}

{{/*
The Secret holding the Redis URL: the existing one, or the one this chart creates from
redis.url.
*/}}
{{- define "crier.redisSecretName" -}}
{{- if .Values.redis.existingSecret }}
{{- .Values.redis.existingSecret }}
{{- else }}
{{- printf "%s-redis" (include "crier.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "crier.redisSecretKey" -}}
{{- if .Values.redis.existingSecret }}
{{- .Values.redis.existingSecretKey | default "redis-url" }}
{{- else -}}
redis-url
{{- end }}
{{- end }}

{{/*
Seconds the preStop hook sleeps (0: no hook).
*/}}
{{- define "crier.preStopSeconds" -}}
{{- .Values.lifecycle.preStopSleepSeconds | default 0 | int }}
{{- end }}

{{/*
The pod's termination grace period: the preStop sleep, then the server's drain
(config.server.shutdown_grace_secs), then a margin. An explicit value shorter than the
first two together is refused, since Kubernetes would SIGKILL a draining pod.
*/}}
{{- define "crier.terminationGracePeriodSeconds" -}}
{{- $needed := add (include "crier.preStopSeconds" . | int) (.Values.config.server.shutdown_grace_secs | int) }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $needed (.Values.lifecycle.terminationMarginSeconds | default 0 | int) }}
{{- else }}
{{- $explicit := .Values.terminationGracePeriodSeconds | int }}
{{- if lt $explicit $needed }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least lifecycle.preStopSleepSeconds + config.server.shutdown_grace_secs (%d)" $explicit $needed) }}
{{- end }}
{{- $explicit }}
{{- end }}
{{- end }}

{{/*
Checks that values make sense together; called from the Deployment.
*/}}
{{- define "crier.validate" -}}
{{- $multi := or .Values.autoscaling.enabled (gt (.Values.replicaCount | int) 1) }}
{{- if and $multi (not (include "crier.redisEnabled" .)) }}
{{- fail "More than one replica (replicaCount > 1 or autoscaling.enabled) needs Redis: set redis.url or redis.existingSecret. Without Redis each pod is a separate single-node server." }}
{{- end }}
{{- if and .Values.autoscaling.enabled (lt (.Values.autoscaling.maxReplicas | int) (.Values.autoscaling.minReplicas | int)) }}
{{- fail "autoscaling.maxReplicas must be at least autoscaling.minReplicas" }}
{{- end }}
{{- if and .Values.redis.existingSecret .Values.redis.url }}
{{- fail "Set either redis.url or redis.existingSecret, not both" }}
{{- end }}
{{- end }}

{{/*
Whether a PodDisruptionBudget is rendered: enabled, and more than one pod expected.
*/}}
{{- define "crier.pdbEnabled" -}}
{{- if and .Values.podDisruptionBudget.enabled (or .Values.autoscaling.enabled (gt (.Values.replicaCount | int) 1)) }}true{{ end }}
{{- end }}
