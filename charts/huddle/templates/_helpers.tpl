{{/*
Names and labels shared by the templates. huddle-sim and the docs rely on
the names: with release "huddle" the Deployment, the webhook configuration
and the ClusterRole are "huddle", the Service "huddle-webhook" and the
certificate Secret "huddle-webhook-cert".
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "huddle.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: fullnameOverride, else the release name if it contains the
chart name, else <release>-<name>; 63 characters at most (a DNS label).
*/}}
{{- define "huddle.fullname" -}}
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

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "huddle.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels the Deployment selects its pods by; never change them. */}}
{{- define "huddle.selectorLabels" -}}
app.kubernetes.io/name: {{ include "huddle.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object the chart renders. */}}
{{- define "huddle.labels" -}}
helm.sh/chart: {{ include "huddle.chart" . }}
{{ include "huddle.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: huddle
{{- end }}

{{/*
Labels of the uninstall hook's objects: a name of their own, so the hook
Job's pod never matches the Deployment's Service or budget.
*/}}
{{- define "huddle.cleanupLabels" -}}
helm.sh/chart: {{ include "huddle.chart" . }}
app.kubernetes.io/name: {{ include "huddle.name" . }}-cleanup
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: huddle
app.kubernetes.io/component: cleanup
{{- end }}

{{/* The ServiceAccount huddle runs as. */}}
{{- define "huddle.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "huddle.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The webhook's Service. */}}
{{- define "huddle.webhookService" -}}
{{- printf "%s-webhook" (include "huddle.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Secret holding the webhook's serving certificate (and, with the built-in rotator, its CA). */}}
{{- define "huddle.certSecret" -}}
{{- printf "%s-webhook-cert" (include "huddle.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The webhook's DNS name: the name its serving certificate is for. */}}
{{- define "huddle.webhookDNSName" -}}
{{- printf "%s.%s.svc" (include "huddle.webhookService" .) .Release.Namespace }}
{{- end }}

{{/* The image of huddle and of the uninstall hook. */}}
{{- define "huddle.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The directory huddle reads its serving certificate from. */}}
{{- define "huddle.certDir" -}}
/tmp/k8s-webhook-server/serving-certs
{{- end }}

{{/*
The restricted Pod Security profile, shared by huddle's pods and the
uninstall hook's.
*/}}
{{- define "huddle.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "huddle.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
{{- end }}

{{/* The Certificate cert-manager issues the serving certificate as. */}}
{{- define "huddle.certificate" -}}
{{- printf "%s-webhook" (include "huddle.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
