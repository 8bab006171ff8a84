{{/* Chart name, overridable. */}}
{{- define "kubediffusers.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects (63 characters at most). */}}
{{- define "kubediffusers.fullname" -}}
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

{{- define "kubediffusers.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "kubediffusers.labels" -}}
helm.sh/chart: {{ include "kubediffusers.chart" . }}
{{ include "kubediffusers.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubediffusers
{{- end }}

{{/* The Deployment's selector: never changes between upgrades. */}}
{{- define "kubediffusers.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubediffusers.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "kubediffusers.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kubediffusers.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kubediffusers.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "kubediffusers.runnerImage" -}}
{{- printf "%s:%s" .Values.runner.image.repository (default .Chart.AppVersion .Values.runner.image.tag) }}
{{- end }}

{{/* The watched namespaces in namespaced mode, as a JSON list (the release namespace when none are given). */}}
{{- define "kubediffusers.watchNamespaces" -}}
{{- if .Values.watch.namespaces }}
{{- toJson .Values.watch.namespaces }}
{{- else }}
{{- toJson (list .Release.Namespace) }}
{{- end }}
{{- end }}

{{/* Names of runner.imagePullSecrets, comma-separated (KUBEDIFFUSERS_OPERATOR_IMAGE_PULL_SECRETS). */}}
{{- define "kubediffusers.runnerPullSecrets" -}}
{{- $names := list }}
{{- range .Values.runner.imagePullSecrets }}{{ $names = append $names .name }}{{ end }}
{{- join "," $names }}
{{- end }}

{{/* The operator's metrics port, which must differ from the liveness port. */}}
{{- define "kubediffusers.metricsPort" -}}
{{- if eq (int .Values.metrics.port) (int .Values.liveness.port) }}
{{- fail (printf "metrics.port and liveness.port are both %v: the operator serves them on separate ports" .Values.metrics.port) }}
{{- end }}
{{- .Values.metrics.port }}
{{- end }}

{{/* Labels of the runner pods and Services the operator makes (operator/names.py). */}}
{{- define "kubediffusers.runnerSelector" -}}
app.kubernetes.io/name: kubediffusers-runner
app.kubernetes.io/managed-by: kubediffusers-operator
{{- end }}

{{/* Where the runners are, for a monitor's namespaceSelector. */}}
{{- define "kubediffusers.runnerNamespaceSelector" -}}
{{- if eq .Values.watch.scope "cluster" }}
any: true
{{- else }}
matchNames:
  {{- include "kubediffusers.watchNamespaces" . | fromJsonArray | toYaml | nindent 2 }}
{{- end }}
{{- end }}
