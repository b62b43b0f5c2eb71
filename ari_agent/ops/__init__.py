"""Operations: `make up` stack, `ari-agent doctor`, test calls, call listings."""
