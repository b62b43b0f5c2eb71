"""The seam between our Azure adapters and the Speech SDK.

The SDK's service protocol is proprietary, so the adapters are tested
against ``SpeechBackend`` fakes; ``SdkBackend`` is the one thin layer that
builds SDK objects. Callbacks are invoked on SDK threads (and so on the
fakes' threads): receivers must hand them to their event loop thread-safely.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from providers.base import AudioSpec
from providers.secrets import Secret

log = logging.getLogger(__name__)

# Failures that trying again cannot fix (the SDK's CancellationErrorCode names).
PERMANENT_ERRORS = frozenset({"AuthenticationFailure", "BadRequest", "Forbidden"})


class RecognitionCallbacks(Protocol):
    def on_recognizing(self, text: str) -> None: ...
    def on_recognized(self, text: str) -> None: ...
    def on_speech_started(self) -> None: ...
    def on_canceled(self, reason: str, retryable: bool) -> None: ...
    def on_stopped(self) -> None: ...


class Recognition(Protocol):
    def write(self, audio: bytes) -> None:
        """Queue audio into the push stream (does not block on the network)."""

    def stop(self) -> None:
        """End the stream and stop recognising; blocks: call it from a thread."""


class SynthesisCallbacks(Protocol):
    def on_audio(self, chunk: bytes) -> None: ...
    def on_done(self) -> None: ...
    def on_canceled(self, reason: str, retryable: bool) -> None: ...


class Synthesis(Protocol):
    def stop(self) -> None:
        """Stop speaking; blocks: call it from a thread."""


class SpeechBackend(Protocol):
    def start_recognition(
        self, spec: AudioSpec, language: str, callbacks: RecognitionCallbacks
    ) -> Recognition:
        """Start continuous recognition of a push stream in ``spec``; blocks: call it from a thread."""

    def start_synthesis(
        self, text: str, sample_rate: int, voice: str | None, language: str, callbacks: SynthesisCallbacks
    ) -> Synthesis:
        """Start synthesising raw PCM16 at ``sample_rate``; blocks: call it from a thread."""


@dataclass(frozen=True)
class AzureSettings:
    key: Secret | None
    region: str | None = None
    endpoint: str | None = None  # e.g. a container's or a sovereign cloud's URL
    host: str | None = None  # e.g. ws://localhost:5000 for a Speech container
    segmentation_silence_ms: int | None = None

    def __repr__(self) -> str:
        return f"AzureSettings(region={self.region!r}, endpoint={self.endpoint!r}, host={self.host!r})"


OUTPUT_FORMATS = {
    8000: "Raw8Khz16BitMonoPcm",
    16000: "Raw16Khz16BitMonoPcm",
    24000: "Raw24Khz16BitMonoPcm",
    48000: "Raw48Khz16BitMonoPcm",
}


class SdkBackend:
    """``SpeechBackend`` over azure-cognitiveservices-speech."""

    def __init__(self, settings: AzureSettings) -> None:
        self.settings = settings

    def __repr__(self) -> str:
        return f"SdkBackend({self.settings!r})"

    def scrub(self, text: str) -> str:
        """The SDK's error text with the key blanked, should it ever echo a request."""
        key = self.settings.key.reveal() if self.settings.key else ""
        return text.replace(key, "********") if key else text

    def config(self) -> Any:
        import azure.cognitiveservices.speech as speechsdk

        s = self.settings
        key = s.key.reveal() if s.key else None
        if s.endpoint:
            cfg = speechsdk.SpeechConfig(subscription=key, endpoint=s.endpoint)
        elif s.host:
            cfg = speechsdk.SpeechConfig(subscription=key, host=s.host)
        else:
            cfg = speechsdk.SpeechConfig(subscription=key, region=s.region)
        if s.segmentation_silence_ms is not None:
            cfg.set_property(
                speechsdk.PropertyId.Speech_SegmentationSilenceTimeoutMs, str(s.segmentation_silence_ms)
            )
        return cfg

    def start_recognition(
        self, spec: AudioSpec, language: str, callbacks: RecognitionCallbacks
    ) -> Recognition:
        import azure.cognitiveservices.speech as speechsdk

        audio = speechsdk.audio
        if spec.encoding == "mulaw":
            fmt = audio.AudioStreamFormat(
                samples_per_second=spec.sample_rate,
                bits_per_sample=8,
                channels=1,
                wave_stream_format=audio.AudioStreamWaveFormat.MULAW,
            )
        else:
            fmt = audio.AudioStreamFormat(samples_per_second=spec.sample_rate, bits_per_sample=16, channels=1)
        stream = audio.PushAudioInputStream(stream_format=fmt)
        recognizer = speechsdk.SpeechRecognizer(
            speech_config=self.config(), audio_config=audio.AudioConfig(stream=stream), language=language
        )
        reasons = speechsdk.ResultReason

        def recognized(evt: Any) -> None:
            if evt.result.reason == reasons.RecognizedSpeech:
                callbacks.on_recognized(evt.result.text)
            elif evt.result.reason == reasons.NoMatch:
                callbacks.on_recognized("")

        def canceled(evt: Any) -> None:
            details = evt.cancellation_details
            if details.reason == speechsdk.CancellationReason.EndOfStream:
                callbacks.on_stopped()
                return
            code = getattr(details.code, "name", str(details.code))
            callbacks.on_canceled(
                self.scrub(f"{code}: {details.error_details}"), code not in PERMANENT_ERRORS
            )

        recognizer.recognizing.connect(lambda evt: callbacks.on_recognizing(evt.result.text))
        recognizer.recognized.connect(recognized)
        recognizer.speech_start_detected.connect(lambda evt: callbacks.on_speech_started())
        recognizer.canceled.connect(canceled)
        recognizer.session_stopped.connect(lambda evt: callbacks.on_stopped())
        recognizer.start_continuous_recognition_async().get()
        return _SdkRecognition(recognizer, stream)

    def start_synthesis(
        self, text: str, sample_rate: int, voice: str | None, language: str, callbacks: SynthesisCallbacks
    ) -> Synthesis:
        import azure.cognitiveservices.speech as speechsdk

        cfg = self.config()
        cfg.set_speech_synthesis_output_format(
            getattr(speechsdk.SpeechSynthesisOutputFormat, OUTPUT_FORMATS[sample_rate])
        )
        cfg.speech_synthesis_language = language
        if voice:
            cfg.speech_synthesis_voice_name = voice
        # No audio output device: the audio arrives in the synthesizing events.
        synthesizer = speechsdk.SpeechSynthesizer(speech_config=cfg, audio_config=None)

        def canceled(evt: Any) -> None:
            details = evt.result.cancellation_details
            code = getattr(details.error_code, "name", str(details.error_code))
            callbacks.on_canceled(
                self.scrub(f"{code}: {details.error_details}"), code not in PERMANENT_ERRORS
            )

        synthesizer.synthesizing.connect(lambda evt: callbacks.on_audio(bytes(evt.result.audio_data)))
        synthesizer.synthesis_completed.connect(lambda evt: callbacks.on_done())
        synthesizer.synthesis_canceled.connect(canceled)
        future = synthesizer.speak_text_async(text)
        return _SdkSynthesis(synthesizer, future)


class _SdkRecognition:
    def __init__(self, recognizer: Any, stream: Any) -> None:
        self._recognizer = recognizer
        self._stream = stream

    def write(self, audio: bytes) -> None:
        self._stream.write(audio)

    def stop(self) -> None:
        self._stream.close()
        self._recognizer.stop_continuous_recognition_async().get()


class _SdkSynthesis:
    def __init__(self, synthesizer: Any, future: Any) -> None:
        # Held so the SDK objects live as long as the synthesis.
        self._synthesizer = synthesizer
        self._future = future

    def stop(self) -> None:
        self._synthesizer.stop_speaking_async().get()
