{{- define "flashwatch.labels" -}}
app.kubernetes.io/name: flashwatch
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "flashwatch.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{ .Values.secrets.existingSecret }}
{{- else -}}
{{ .Release.Name }}-flashwatch
{{- end -}}
{{- end -}}

{{/* Environment shared by every role; secrets come from the Secret, never from values. */}}
{{- define "flashwatch.env" -}}
- name: FW_MODE
  value: distributed
- name: FW_BUS__KIND
  value: kafka
- name: FW_LOG_JSON
  value: "true"
- name: FW_DATA_DIR
  value: /data
- name: FW_API__HOST
  value: 0.0.0.0
- name: FW_API__PORT
  value: "8080"
- name: FW_KAFKA_BOOTSTRAP
  value: {{ .Values.external.kafka.bootstrap | quote }}
- name: FW_REASONER__URL
  value: "http://{{ .Release.Name }}-reasoner:{{ .Values.reasoner.port }}"
- name: FW_DB_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "flashwatch.secretName" . }}
      key: db-url
- name: FW_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "flashwatch.secretName" . }}
      key: redis-url
- name: FW_REASONER__SERVICE_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "flashwatch.secretName" . }}
      key: reasoner-service-token
{{- range $name, $value := .Values.config }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* Container settings shared by every role: port, probes, security, scratch mounts. */}}
{{- define "flashwatch.container" -}}
ports:
  - name: http
    containerPort: 8080
    protocol: TCP
startupProbe:
  httpGet:
    path: /v1/health
    port: http
  periodSeconds: 5
  failureThreshold: 60
livenessProbe:
  httpGet:
    path: /v1/health
    port: http
  periodSeconds: 15
  timeoutSeconds: 5
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /v1/ready
    port: http
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: 2
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
{{- end -}}

{{/* Pod settings shared by every role. */}}
{{- define "flashwatch.pod" -}}
automountServiceAccountToken: false
enableServiceLinks: false
terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- if .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml .Values.imagePullSecrets | nindent 2 }}
{{- end }}
{{- end -}}

{{/* One egress rule to a backend ({to: [peers], ports: [...]}); nothing when to is empty,
     because an empty `to` would allow every destination. */}}
{{- define "flashwatch.egressRule" -}}
{{- if .to -}}
- to:
    {{- toYaml .to | nindent 4 }}
  ports:
    {{- toYaml .ports | nindent 4 }}
{{- end }}
{{- end -}}

{{- define "flashwatch.dnsRule" -}}
- to:
    {{- toYaml .Values.networkPolicy.dns | nindent 4 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end -}}

{{- define "flashwatch.toReasoner" -}}
- to:
    - podSelector:
        matchLabels:
          app.kubernetes.io/instance: {{ .Release.Name }}
          app.kubernetes.io/component: reasoner
  ports:
    - port: 8080
      protocol: TCP
{{- end -}}

{{- define "flashwatch.metricsIngress" -}}
{{- if .Values.networkPolicy.metricsFrom -}}
- from:
    {{- toYaml .Values.networkPolicy.metricsFrom | nindent 4 }}
  ports:
    - port: 8080
      protocol: TCP
{{- end }}
{{- end -}}
