"""Questions on the sample document (riverside_vet.md), written as callers would ask them.

Written and committed before any retrieval code existed, and not to be edited
after (issue 18): the retrieval is tuned against this set, so changing the set
to suit it would hide how it does on callers' own words. The questions are
paraphrases, not sentences copied from the document; some share no keyword
with their passage on purpose ("castrated" for neutering).

ANSWERABLE: (question, source file, heading of the passage that answers it).
NO_ANSWER: questions a caller of a vet could ask whose answer is not in the
document; the search must return nothing above its threshold for them.
"""

from __future__ import annotations

from pathlib import Path

DOCUMENT = Path(__file__).with_name("riverside_vet.md")
SOURCE = DOCUMENT.name

ANSWERABLE: tuple[tuple[str, str, str], ...] = (
    ("What time do you shut on a weekday?", SOURCE, "Opening hours"),
    ("Can I come in on a Sunday?", SOURCE, "Opening hours"),
    ("What's your address?", SOURCE, "Location and directions"),
    ("How do I walk to you from the train station?", SOURCE, "Location and directions"),
    ("Which bus goes past your practice?", SOURCE, "Location and directions"),
    ("Is there somewhere to leave my car?", SOURCE, "Parking"),
    ("Do I have to pay to park at yours?", SOURCE, "Parking"),
    ("How can I make a booking for my dog to see a vet?", SOURCE, "Booking an appointment"),
    ("How long does a normal appointment take?", SOURCE, "Booking an appointment"),
    ("What happens if I don't turn up for my appointment?", SOURCE, "Cancelling or changing an appointment"),
    (
        "I need to move my appointment to next week, is that possible?",
        SOURCE,
        "Cancelling or changing an appointment",
    ),
    (
        "My dog ate rat poison in the middle of the night, who do I ring?",
        SOURCE,
        "Emergencies out of hours",
    ),
    ("Who handles emergencies at night when you're shut?", SOURCE, "Emergencies out of hours"),
    ("How much do you charge to see a vet?", SOURCE, "Consultation fees"),
    ("Is a follow-up visit cheaper?", SOURCE, "Consultation fees"),
    ("Can I pay by cheque?", SOURCE, "Payment methods"),
    ("Can I spread the cost of an expensive treatment over a few months?", SOURCE, "Payment methods"),
    ("Will you deal with my insurance company directly?", SOURCE, "Pet insurance claims"),
    ("When should my puppy have its jabs?", SOURCE, "Vaccinations for dogs"),
    ("My dog is going into kennels, does he need anything?", SOURCE, "Vaccinations for dogs"),
    ("How often does my cat need a booster injection?", SOURCE, "Vaccinations for cats"),
    ("At what age should a kitten get vaccinated?", SOURCE, "Vaccinations for cats"),
    ("Does my indoor bunny really need a vaccine?", SOURCE, "Rabbit vaccinations"),
    ("How old does my cat have to be before she can be spayed?", SOURCE, "Neutering"),
    ("Will my dog have to stay overnight after being castrated?", SOURCE, "Neutering"),
    ("Can my dog eat breakfast on the morning of his operation?", SOURCE, "Before an operation"),
    ("Should I starve my rabbit before surgery?", SOURCE, "Before an operation"),
    ("When are the stitches taken out?", SOURCE, "After an operation"),
    ("How should I look after my cat after her surgery?", SOURCE, "After an operation"),
    ("How much does it cost to have my dog's teeth cleaned?", SOURCE, "Dental care"),
    ("Does my cat legally need to be chipped?", SOURCE, "Microchipping"),
    ("What's the price of a microchip?", SOURCE, "Microchipping"),
    ("How often should I deworm my cat?", SOURCE, "Flea and worm treatment"),
    ("How much notice do you need for repeat tablets?", SOURCE, "Prescriptions and repeat medication"),
    ("Can I get a written script to buy medicine online?", SOURCE, "Prescriptions and repeat medication"),
    ("How much is the monthly plan for a dog?", SOURCE, "Pet Health Club"),
    ("What's included in your membership scheme?", SOURCE, "Pet Health Club"),
    ("Do you see lizards and tortoises?", SOURCE, "Exotic pets"),
    ("Can a vet come to my house? My dog is too old to travel.", SOURCE, "Home visits"),
    ("Can I get my cat's ashes back after she's put to sleep?", SOURCE, "Euthanasia and aftercare"),
    ("Does my cat need to be in a box when I bring him?", SOURCE, "Bringing your pet to the clinic"),
    ("My dog has diarrhoea, should I wait somewhere special?", SOURCE, "Bringing your pet to the clinic"),
    ("How long until I hear about my dog's blood work?", SOURCE, "Test results"),
    ("How do I sign up as a new client with you?", SOURCE, "Registering a new pet"),
    ("Who do I talk to if I'm not happy with how my pet was treated?", SOURCE, "Complaints and feedback"),
)

NO_ANSWER: tuple[str, ...] = (
    "Do you offer dog grooming or nail clipping?",
    "Are you hiring veterinary nurses at the moment?",
    "Can I get a pet passport for travelling to France?",
    "Do you run puppy training classes?",
    "Is there wifi in the waiting room?",
    "Do you sell horse wormers?",
    "Can you recommend a good dog walker?",
    "Do you do acupuncture or hydrotherapy for pets?",
    "Do you have a vet who speaks Polish?",
    "Can I adopt a cat from you?",
    "Do you give discounts for students or pensioners?",
    "What's the weather going to be like tomorrow?",
    "Do you offer behavioural therapy for aggressive dogs?",
)
