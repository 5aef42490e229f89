// Command kube-validate decodes every Kubernetes manifest of a multi-document YAML stream (such as
// `helm template` output) on standard input strictly into the API's own Go types: an unknown or
// misplaced field, a wrong type or a bad quantity is an error naming the object and the field.
// Kinds it has no types for (custom resources) are listed and skipped.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

type header struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
}

// typed returns an empty object of the API type for apiVersion/kind, or nil.
func typed(apiVersion, kind string) any {
	switch apiVersion + "/" + kind {
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}
	case "v1/Service":
		return &corev1.Service{}
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}
	case "v1/PersistentVolumeClaim":
		return &corev1.PersistentVolumeClaim{}
	case "v1/Secret":
		return &corev1.Secret{}
	case "apps/v1/StatefulSet":
		return &appsv1.StatefulSet{}
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}
	case "networking.k8s.io/v1/NetworkPolicy":
		return &networkingv1.NetworkPolicy{}
	}
	return nil
}

func main() {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(os.Stdin))
	failed := false
	checked := 0
	for {
		doc, err := reader.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "reading the stream: %v\n", err)
			os.Exit(2)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var h header
		if err := yaml.Unmarshal(doc, &h); err != nil {
			fmt.Fprintf(os.Stderr, "not a manifest: %v\n", err)
			failed = true
			continue
		}
		if h.Kind == "" {
			continue
		}
		obj := typed(h.APIVersion, h.Kind)
		name := fmt.Sprintf("%s/%s %s", h.APIVersion, h.Kind, h.Metadata.Name)
		if obj == nil {
			fmt.Printf("skipped %s (no built-in type)\n", name)
			continue
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
			failed = true
			continue
		}
		checked++
		fmt.Printf("ok %s\n", name)
	}
	if failed {
		os.Exit(1)
	}
	fmt.Printf("%d manifests decoded strictly\n", checked)
}
