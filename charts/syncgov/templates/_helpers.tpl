{{/* The chart name, or nameOverride. */}}
{{- define "syncgov.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's objects: "<release>-<chart>", or just "<release>" when the release
name already contains the chart name; at most 63 characters (a DNS label).
*/}}
{{- define "syncgov.fullname" -}}
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

{{/* "<chart>-<version>" for the helm.sh/chart label. */}}
{{- define "syncgov.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels every object of the release carries, but for app.kubernetes.io/component. */}}
{{- define "syncgov.commonLabels" -}}
helm.sh/chart: {{ include "syncgov.chart" . }}
app.kubernetes.io/name: {{ include "syncgov.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: syncgov
{{- end }}

{{/* The labels of the controller's objects. */}}
{{- define "syncgov.labels" -}}
{{ include "syncgov.commonLabels" . }}
app.kubernetes.io/component: controller
{{- end }}

{{/* The labels that select the controller's pods; they never change across upgrades. */}}
{{- define "syncgov.selectorLabels" -}}
app.kubernetes.io/name: {{ include "syncgov.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{/* The controller's ServiceAccount. */}}
{{- define "syncgov.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "syncgov.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The controller image: by digest when one is given, else by tag (default the chart's appVersion). */}}
{{- define "syncgov.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The service account of runner Jobs: fixed, the controller names it in every Job it creates. */}}
{{- define "syncgov.runnerServiceAccountName" -}}
syncgov-runner
{{- end }}
