module github.com/m40llm/m40llm/capi

go 1.26.0

require (
	github.com/m40llm/m40llm v0.0.0
	github.com/stretchr/testify v1.12.1
)

require (
	github.com/ardanlabs/jinja v1.8.0 // indirect
	github.com/dlclark/regexp2 v1.12.0 // indirect
	github.com/ebitengine/purego v0.11.3 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/sys v0.50.0 // indirect
)

replace github.com/m40llm/m40llm => ../
