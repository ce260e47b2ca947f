{{/* Labels every object carries; component is agent or backend. */}}
{{- define "harrier.labels" -}}
app.kubernetes.io/name: harrier
app.kubernetes.io/part-of: harrier
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{- define "harrier.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The backend's in-cluster name: agents dial it and its certificate names it. */}}
{{- define "harrier.backendHost" -}}
harrier-backend.{{ .Release.Namespace }}.svc
{{- end }}

{{/* Where the API server posts audit events: the harrier-audit Service. */}}
{{- define "harrier.auditWebhookURL" -}}
{{- if .Values.auditWebhook.server -}}
{{ .Values.auditWebhook.server }}
{{- else -}}
https://{{ .Values.auditWebhook.clusterIP | default (printf "harrier-audit.%s.svc" .Release.Namespace) }}:{{ .Values.auditWebhook.port }}/
{{- end -}}
{{- end }}

{{/* Whether agents enroll: no per-node Secret, enrollment on. */}}
{{- define "harrier.agentEnrolls" -}}
{{- if and (not .Values.agent.certsSecret) .Values.enrollment.enabled -}}true{{- end -}}
{{- end }}

{{/* The URL agents enroll at. */}}
{{- define "harrier.enrollServer" -}}
{{- .Values.enrollment.server | default (printf "https://%s:%v" (include "harrier.backendHost" .) .Values.backend.service.apiPort) | trimSuffix "/" -}}
{{- end }}
