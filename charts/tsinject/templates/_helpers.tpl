{{- define "tsinject.labels" -}}
app.kubernetes.io/name: tsinject
app.kubernetes.io/part-of: tsinject
{{- end -}}
